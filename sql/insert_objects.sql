-- Group commit (service/batch.py): a batch of objects in one statement, one transaction.
-- $1 text[], $2 text[]: the emails and phone numbers, in arrival order; object n is ($1[n], $2[n]).
-- Returns one row per object, in arrival order. Ids are drawn in insertion order, so the n-th
-- smallest id is object n; the guard column makes the statement fail (and the batch be retried
-- object by object) should a row ever be paired with another object's values.
WITH batch AS (
    SELECT n, email, phone_number
    FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS b (email, phone_number, n)
), inserted AS (
    INSERT INTO objects (email, phone_number)
    SELECT email, phone_number FROM batch ORDER BY n
    RETURNING id, email, phone_number, created_at
), paired AS (
    SELECT row_number() OVER (ORDER BY id) AS n, inserted.* FROM inserted
)
SELECT paired.id, paired.email, paired.phone_number, paired.created_at,
       CASE WHEN (paired.email, paired.phone_number) IS DISTINCT FROM (batch.email, batch.phone_number)
            THEN ('object ' || paired.id || ' paired with another object of its batch')::int
       END AS misplaced
FROM paired JOIN batch USING (n)
ORDER BY paired.n
