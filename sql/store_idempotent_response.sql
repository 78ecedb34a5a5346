-- The response to replay, written before the claiming transaction commits.
UPDATE idempotency_keys
SET status = $3, response = $4::json
WHERE key = $1 AND route = $2
