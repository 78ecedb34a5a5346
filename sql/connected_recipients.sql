-- Which of the objects connected here receive alert $1 (for notifications too large to list
-- them): one primary-key probe per connected object, whatever the size of the table.
SELECT object_id
FROM object_alerts
WHERE alert_id = $1 AND object_id = ANY ($2::bigint[])
