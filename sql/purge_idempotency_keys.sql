-- Forget keys older than $1 seconds (they are ignored already; this only reclaims space).
DELETE FROM idempotency_keys
WHERE created_at < now() - make_interval(secs => $1::double precision)
