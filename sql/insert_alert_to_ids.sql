-- One statement: keep the ids that exist now, store the alert with their count, and one
-- object_alerts row per distinct recipient. Returns the alert and its recipients.
WITH recipients AS (
    SELECT id FROM objects WHERE id = ANY ($2::bigint[])
), alert AS (
    INSERT INTO alerts (text, alert_all, number_of_objects_receiving_alert)
    SELECT $1, false, count(*) FROM recipients
    RETURNING id, text, alert_all, number_of_objects_receiving_alert, created_at
), delivered AS (
    INSERT INTO object_alerts (object_id, alert_id)
    SELECT recipients.id, alert.id FROM recipients, alert
)
SELECT alert.*, ARRAY(SELECT id FROM recipients ORDER BY id) AS object_ids
FROM alert
