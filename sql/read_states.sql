-- After the LISTEN connection was lost: the read cursor and unread count of each of the
-- objects connected here ($1) whose cursor has ever moved (read in the catch-up's snapshot).
SELECT o.id AS object_id, o.acked_alert_id,
       (SELECT count(*) FROM object_alerts
         WHERE object_id = o.id AND alert_id > o.acked_alert_id) AS unread
FROM objects AS o
WHERE o.id = ANY ($1::bigint[]) AND o.acked_alert_id > 0
