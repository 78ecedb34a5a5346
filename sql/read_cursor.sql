-- Object $1's read cursor (no row: no such object).
SELECT acked_alert_id FROM objects WHERE id = $1
