-- The database is the event bus.
-- depends: 0001.schema
--
-- 1. Alert ids follow commit order. A BEFORE INSERT trigger takes a transaction-scoped advisory
--    lock and only then draws the id; the lock is released after COMMIT, so an alert with a higher
--    id always commits after every lower one, for the API and hand-written SQL alike. "Everything
--    after id N" is then a complete, gap-free description of what a client has not yet seen.
-- 2. One NOTIFY per alert on channel `alerts`, at COMMIT (a deferred constraint trigger), with
--    payload {"alert_id": 42, "object_ids": [1, 3, 4]}. When the recipient list would not fit
--    in a NOTIFY payload (8000 bytes) it is {"alert_id": 42, "object_ids": null} and listeners
--    read the recipients from object_alerts.
-- 3. alert_frame(alerts): the JSON text a WebSocket client receives, built once per alert.

ALTER TABLE alerts ALTER COLUMN id DROP DEFAULT;

CREATE FUNCTION alerts_assign_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- 452823510904 is 'inbox' in ASCII: the lock key, held until this transaction ends.
    PERFORM pg_advisory_xact_lock(452823510904);
    NEW.id := nextval('alerts_id_seq');
    RETURN NEW;
END
$$;

CREATE TRIGGER alerts_assign_id
    BEFORE INSERT ON alerts
    FOR EACH ROW EXECUTE FUNCTION alerts_assign_id();

CREATE FUNCTION alerts_notify() RETURNS trigger
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

CREATE CONSTRAINT TRIGGER alerts_notify
    AFTER INSERT ON alerts
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION alerts_notify();

CREATE FUNCTION alert_frame(a alerts) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', a.id,
        'text', a.text,
        'alert_all', a.alert_all,
        'number_of_objects_receiving_alert', a.number_of_objects_receiving_alert,
        -- the same text the HTTP API gives: UTC, always six fractional digits
        'created_at', to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
    )::text
$$;
