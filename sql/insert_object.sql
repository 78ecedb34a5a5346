INSERT INTO objects (email, phone_number)
VALUES ($1, $2)
RETURNING id, email, phone_number, created_at
