-- Parameters: $1, $2 the two keys of the lock. Held for the whole run, so
-- that two backfills never walk one database at the same time. It waits
-- at most lock_timeout, which the caller sets, for a run that is ending.
SELECT pg_advisory_lock($1, $2);
