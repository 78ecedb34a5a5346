SELECT id, email, phone_number, created_at
FROM objects
WHERE id = $1
