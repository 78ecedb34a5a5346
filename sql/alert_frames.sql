-- The frames of alerts just notified whose notification could not carry them (migration 0005:
-- a text too long for the payload), read once each, in commit (= id) order.
SELECT a.id, convert_to(alert_frame(a), 'UTF8') AS frame
FROM alerts AS a
WHERE a.id = ANY ($1::bigint[])
ORDER BY a.id
