-- A committer's turn (service/batch.py): returns once no other transaction holds the alert-id
-- lock of alerts_assign_id (migration 0002), without keeping it: a shared lock on the same key,
-- taken and released by this statement's own transaction. True when it was free at once.
-- While it waits, the committer's next batch keeps gathering in the process.
SELECT CASE WHEN pg_try_advisory_xact_lock_shared(452823510904) THEN true
            ELSE (SELECT false FROM pg_advisory_xact_lock_shared(452823510904))
       END AS was_free
