-- The frames of the alerts just notified, read once each, in commit (= id) order.
SELECT a.id, convert_to(alert_frame(a), 'UTF8') AS frame
FROM alerts AS a
WHERE a.id = ANY ($1::bigint[])
ORDER BY a.id
