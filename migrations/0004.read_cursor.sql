-- A read cursor per object, shared by all of its devices, and a NOTIFY when it moves.
-- depends: 0003.idempotency
--
-- 1. objects.acked_alert_id: every alert of the object with an id up to it is read; 0 is none.
--    The API only moves it forward (greatest(old, new)), so racing acks end at the highest.
-- 2. When it moves forward, one NOTIFY on channel `acks` at COMMIT (a deferred constraint
--    trigger, like alerts_notify), payload {"object_id": 1, "acked_alert_id": 42, "unread": 3}.
--    Its own channel: a DBA's `LISTEN alerts` keeps seeing alerts only.
-- 3. `unread` is exact at the ack's place in the stream. The trigger takes the alert-id lock of
--    0002 before it counts (a fresh snapshot per statement), so no alert can commit between the
--    count and this NOTIFY: a listener that receives alerts and acks in commit order has seen
--    exactly the alerts counted as read or unread. The lock is held from the count to COMMIT.

ALTER TABLE objects
    ADD COLUMN acked_alert_id bigint NOT NULL DEFAULT 0 CHECK (acked_alert_id >= 0);

CREATE FUNCTION objects_ack_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cursor_id bigint;
    unread    bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(452823510904);  -- the alert-id lock: see 3. above
    -- The cursor as this transaction leaves it (several acks in one transaction notify the last).
    SELECT acked_alert_id INTO cursor_id FROM objects WHERE id = NEW.id;
    SELECT count(*) INTO unread
      FROM object_alerts WHERE object_id = NEW.id AND alert_id > cursor_id;
    PERFORM pg_notify('acks', json_build_object('object_id', NEW.id,
                                                'acked_alert_id', cursor_id,
                                                'unread', unread)::text);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER objects_ack_notify
    AFTER UPDATE OF acked_alert_id ON objects
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.acked_alert_id > OLD.acked_alert_id)
    EXECUTE FUNCTION objects_ack_notify();
