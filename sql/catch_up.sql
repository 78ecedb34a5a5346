-- After the LISTEN connection was lost: every alert committed after id $1 for the objects
-- connected here ($2), with its frame and recipients, in commit (= id) order.
SELECT a.id, convert_to(alert_frame(a), 'UTF8') AS frame, array_agg(oa.object_id) AS object_ids
FROM alerts AS a
JOIN object_alerts AS oa ON oa.alert_id = a.id
WHERE a.id > $1 AND oa.object_id = ANY ($2::bigint[])
GROUP BY a.id
ORDER BY a.id
