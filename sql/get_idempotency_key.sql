SELECT request_hash, status, response::text AS response
FROM idempotency_keys
WHERE key = $1 AND route = $2
