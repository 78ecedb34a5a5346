-- Claim key $1 on route $2 for a request hashing to $3, or re-claim it when older than $4
-- seconds. Returns a row only when claimed; otherwise the key is live and was answered
-- (ON CONFLICT waits for a claim still in progress to commit or roll back first).
INSERT INTO idempotency_keys (key, route, request_hash)
VALUES ($1, $2, $3)
ON CONFLICT (key, route) DO UPDATE
    SET request_hash = excluded.request_hash, status = NULL, response = NULL, created_at = now()
    WHERE idempotency_keys.created_at < now() - make_interval(secs => $4::double precision)
RETURNING true AS claimed
