-- alert_all: every object that exists now, in one set-based statement.
WITH alert AS (
    INSERT INTO alerts (text, alert_all, number_of_objects_receiving_alert)
    SELECT $1, true, count(*) FROM objects
    RETURNING id, text, alert_all, number_of_objects_receiving_alert, created_at
), delivered AS (
    INSERT INTO object_alerts (object_id, alert_id)
    SELECT objects.id, alert.id FROM objects, alert
)
SELECT alert.* FROM alert
