-- Safe retries: a POST that carries an Idempotency-Key is answered once and replayed after.
-- depends: 0002.realtime
--
-- The row is claimed (inserted, or re-claimed once expired) in the same transaction that writes
-- the object or alert, and its response stored before COMMIT: a crash leaves neither, and a
-- concurrent request with the same key waits on the claim's row lock, then reads the response.

CREATE TABLE idempotency_keys (
    key          text        NOT NULL,
    route        text        NOT NULL,
    request_hash bytea       NOT NULL,  -- sha256 of the request body, canonical JSON
    status       smallint,              -- NULL only inside the claiming transaction
    response     json,                  -- json, not jsonb: replayed byte for byte
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, route)
);

-- The opportunistic purge of expired keys scans by age.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
