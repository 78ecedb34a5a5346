-- Back to 0002's payload: {"alert_id": 42, "object_ids": [1, 3, 4]} (or "object_ids": null).
CREATE OR REPLACE FUNCTION alerts_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    recipients bigint[];
    payload    text;
BEGIN
    -- Runs at COMMIT, so it sees every object_alerts row the transaction wrote for this alert.
    -- The list is capped at 1000 ids and must fit a NOTIFY payload (under 8000 bytes);
    -- past either limit the payload carries the marker object_ids = null instead.
    SELECT array_agg(object_id ORDER BY object_id) INTO recipients
      FROM (SELECT object_id FROM object_alerts WHERE alert_id = NEW.id LIMIT 1001) AS r;
    payload := json_build_object('alert_id', NEW.id,
                                 'object_ids', coalesce(recipients, '{}'::bigint[]))::text;
    IF cardinality(recipients) > 1000 OR octet_length(payload) >= 8000 THEN
        payload := json_build_object('alert_id', NEW.id, 'object_ids', NULL)::text;
    END IF;
    PERFORM pg_notify('alerts', payload);
    RETURN NULL;
END
$$;
