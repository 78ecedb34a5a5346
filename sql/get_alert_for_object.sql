-- Alert $1 as recipient $2 sees it: its own id as the only recipient (none for alert_all);
-- no row when the alert is not addressed to $2.
SELECT a.id, a.text, a.alert_all, a.number_of_objects_receiving_alert, a.created_at,
       CASE WHEN a.alert_all THEN NULL ELSE ARRAY[oa.object_id] END AS object_ids
FROM alerts AS a
JOIN object_alerts AS oa ON oa.alert_id = a.id
WHERE a.id = $1 AND oa.object_id = $2
