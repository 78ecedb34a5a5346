-- Group commit (service/batch.py): a batch of alerts in one statement, so one transaction and
-- one COMMIT (one turn of PostgreSQL's notify lock) for all of them.
-- $1 text[]: the texts, in arrival order; alert n (1-based) is $1[n].
-- $2 bigint[], $3 bigint[]: the recipients wanted, as pairs (alert n, object id).
-- Returns one row per alert in arrival order: the alert and its existing recipients, and
-- id_lock_was_free: whether the alert-id lock was free as the statement began (false: another
-- transaction held it and this batch waited for it; the committer then lets its next batch
-- gather until the lock is free, see sql/wait_alert_id_lock.sql).
--
-- Per alert it does what insert_alert_to_ids.sql does for one: keep the ids that exist now,
-- store the alert with their count, one object_alerts row per recipient. alerts_assign_id
-- draws the ids in insertion order under the id lock, so ids follow arrival order, and the
-- n-th smallest id is alert n. The guard column makes the statement fail (and the batch be
-- retried alert by alert) should a row ever be paired with another alert's text or count.
WITH batch AS (
    SELECT n, text FROM unnest($1::text[]) WITH ORDINALITY AS b (text, n)
), recipients AS (
    SELECT DISTINCT wanted.n, objects.id AS object_id
    FROM unnest($2::bigint[], $3::bigint[]) AS wanted (n, object_id)
    JOIN objects ON objects.id = wanted.object_id
), lists AS (
    SELECT n, count(*) AS how_many, array_agg(object_id ORDER BY object_id) AS object_ids
    FROM recipients GROUP BY n
), planned AS (
    SELECT batch.n, batch.text, coalesce(lists.how_many, 0) AS how_many,
           coalesce(lists.object_ids, '{}') AS object_ids
    FROM batch LEFT JOIN lists USING (n)
), id_lock AS MATERIALIZED (
    -- Read by the INSERT below, so evaluated before its first row takes the lock in
    -- alerts_assign_id (migration 0002), and only once every row is planned, so the lock is
    -- held no longer than before; when free, this takes it (the trigger re-enters it).
    SELECT pg_try_advisory_xact_lock(452823510904) AS was_free
    FROM (SELECT count(*) FROM planned) AS everything_planned
), inserted AS (
    INSERT INTO alerts (text, alert_all, number_of_objects_receiving_alert)
    SELECT text, false, how_many FROM planned CROSS JOIN id_lock
    WHERE id_lock.was_free IS NOT NULL ORDER BY n
    RETURNING id, text, alert_all, number_of_objects_receiving_alert, created_at
), paired AS (
    SELECT row_number() OVER (ORDER BY id) AS n, inserted.* FROM inserted
), delivered AS (
    INSERT INTO object_alerts (object_id, alert_id)
    SELECT recipients.object_id, paired.id FROM recipients JOIN paired USING (n)
)
SELECT paired.id, paired.text, paired.alert_all, paired.number_of_objects_receiving_alert,
       paired.created_at, planned.object_ids, (SELECT was_free FROM id_lock) AS id_lock_was_free,
       CASE WHEN paired.text IS DISTINCT FROM planned.text
                 OR paired.number_of_objects_receiving_alert <> planned.how_many
            THEN ('alert ' || paired.id || ' paired with another alert of its batch')::int
       END AS misplaced
FROM paired JOIN planned USING (n)
ORDER BY paired.n
