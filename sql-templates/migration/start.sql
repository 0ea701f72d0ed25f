-- Keeps the lock_timeout in force before the migration, so that finish.sql
-- can put it back for later migrations in the same transaction. The copy is
-- transaction-local: when the statements run one by one outside a
-- transaction block, it is gone by the next statement, and the check below
-- stops the migration before it changes anything.
SELECT set_config('insights_privacy.lock_timeout_before', current_setting('lock_timeout'), true);

-- apply's lock_timeout: a lock that Coder's writers hold for longer fails the
-- migration instead of letting their next writes queue behind it.
SET LOCAL lock_timeout = {{lockTimeout}};

DO $ip_body$
BEGIN
  IF coalesce(current_setting('insights_privacy.lock_timeout_before', true), '') = '' THEN
    RAISE EXCEPTION 'insights-privacy: this migration must run in one transaction, but its statements are running one by one (autocommit)'
      USING HINT = 'Run it with psql -v ON_ERROR_STOP=1 --single-transaction -f FILE, or through a migration tool that runs each migration in a transaction.';
  END IF;
END
$ip_body$;

-- The advisory lock of every insights-privacy run, transaction-scoped like
-- apply's, so that the migration and an apply or rotate-key never interleave.
-- It waits at most lock_timeout for a run that holds it.
SELECT pg_advisory_xact_lock({{lockClass}}, {{lockObject}});
