SELECT o.id, o.email, o.phone_number, o.created_at, o.acked_alert_id,
       (SELECT count(*) FROM object_alerts
         WHERE object_id = o.id AND alert_id > o.acked_alert_id) AS unread
FROM objects AS o
WHERE o.id = $1
