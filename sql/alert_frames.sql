-- The frames of the alerts just notified, read once each, in commit (= id) order.
SELECT a.id, alert_frame(a) AS frame
FROM alerts AS a
WHERE a.id = ANY ($1::bigint[])
ORDER BY a.id
