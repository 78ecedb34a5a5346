SELECT a.id, a.text, a.alert_all, a.number_of_objects_receiving_alert, a.created_at,
       CASE WHEN a.alert_all THEN NULL
            ELSE ARRAY(SELECT object_id FROM object_alerts WHERE alert_id = a.id ORDER BY object_id)
       END AS object_ids
FROM alerts AS a
WHERE a.id = $1
