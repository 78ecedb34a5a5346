-- Each alert's NOTIFY carries the frame its recipients receive, so no listener has to read it.
-- depends: 0004.read_cursor
--
-- alerts_notify (0002) now sends, on channel `alerts`, at COMMIT, once per alert:
--   {"alert_id": 42, "object_ids": [1, 3, 4], "frame": "{\"id\": 42, \"text\": ...}"}
-- `frame` is alert_frame() of the row as the transaction leaves it: the very text an inbox
-- socket receives, as a JSON string. A NOTIFY payload must stay under 8000 bytes, so the
-- payload is the first of these that fits:
--   1. the recipients and the frame;
--   2. the recipients alone (a long text): listeners read the frame, as before 0005;
--   3. "object_ids": null and the frame (more than 1000 recipients, or too many to fit);
--   4. "object_ids": null alone: listeners read both.
-- The recipients are left out past 1000 ids as before, whatever room there is.

CREATE OR REPLACE FUNCTION alerts_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    recipients bigint[];
    frame      text;
    listed     boolean;
    candidate  text;
    payload    text;
BEGIN
    -- Runs at COMMIT: it sees every object_alerts row the transaction wrote for this alert,
    -- and the alert row as the transaction leaves it.
    SELECT array_agg(object_id ORDER BY object_id) INTO recipients
      FROM (SELECT object_id FROM object_alerts WHERE alert_id = NEW.id LIMIT 1001) AS r;
    recipients := coalesce(recipients, '{}'::bigint[]);
    listed := cardinality(recipients) <= 1000;
    SELECT alert_frame(a) INTO frame FROM alerts AS a WHERE a.id = NEW.id;
    IF listed AND frame IS NOT NULL THEN                                         -- 1.
        candidate := json_build_object('alert_id', NEW.id, 'object_ids', recipients,
                                       'frame', frame)::text;
        IF octet_length(candidate) < 8000 THEN payload := candidate; END IF;
    END IF;
    IF payload IS NULL AND listed THEN                                           -- 2.
        candidate := json_build_object('alert_id', NEW.id, 'object_ids', recipients)::text;
        IF octet_length(candidate) < 8000 THEN payload := candidate; END IF;
    END IF;
    IF payload IS NULL AND frame IS NOT NULL THEN                                -- 3.
        candidate := json_build_object('alert_id', NEW.id, 'object_ids', NULL,
                                       'frame', frame)::text;
        IF octet_length(candidate) < 8000 THEN payload := candidate; END IF;
    END IF;
    IF payload IS NULL THEN                                                      -- 4.
        payload := json_build_object('alert_id', NEW.id, 'object_ids', NULL)::text;
    END IF;
    PERFORM pg_notify('alerts', payload);
    RETURN NULL;
END
$$;
