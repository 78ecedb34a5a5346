-- Move object $1's read cursor up to alert $2, never back: greatest() is evaluated on the row
-- as the row lock leaves it, so racing acks end at the highest. The row is updated only when
-- $2 is an alert of $1; the answer says which of the object and the alert exist, the cursor
-- as it stands, and the alerts after it.
WITH target AS (
    SELECT id FROM objects WHERE id = $1
), member AS (
    SELECT EXISTS (SELECT 1 FROM object_alerts WHERE object_id = $1 AND alert_id = $2) AS ok
), moved AS (
    UPDATE objects SET acked_alert_id = greatest(acked_alert_id, $2)
    WHERE id = $1 AND (SELECT ok FROM member)
    RETURNING acked_alert_id
)
SELECT EXISTS (SELECT 1 FROM target) AS object_exists,
       (SELECT ok FROM member) AS is_alert_of_object,
       moved.acked_alert_id,
       (SELECT count(*) FROM object_alerts
         WHERE object_id = $1 AND alert_id > moved.acked_alert_id) AS unread
FROM (SELECT) AS one
LEFT JOIN moved ON true
