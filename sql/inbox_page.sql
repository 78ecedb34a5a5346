-- One page of an inbox, oldest first: alerts of object $1 with id > $2, as WebSocket frames
-- (UTF-8 bytes, written to the socket as they are).
SELECT a.id, convert_to(alert_frame(a), 'UTF8') AS frame
FROM object_alerts AS oa
JOIN alerts AS a ON a.id = oa.alert_id
WHERE oa.object_id = $1 AND oa.alert_id > $2
ORDER BY oa.alert_id
LIMIT $3
