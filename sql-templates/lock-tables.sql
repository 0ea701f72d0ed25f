-- Takes, at the start, the strongest lock any later statement needs on the
-- tables (DROP TRIGGER and ALTER TABLE … DROP CONSTRAINT need ACCESS
-- EXCLUSIVE). Upgrading a weaker lock later could deadlock with Coder's
-- rollup, which reads the raw tables before it writes the rollup table.
-- Waiting here also lets writers in flight commit, so every row they wrote
-- is visible to the conversion below.
--
-- A lock request that waits makes every later conflicting request wait
-- behind it, so Coder's writers would stop for as long as apply waits. So
-- the locks are first requested without waiting (NOWAIT), again every 20
-- ms, for as long as lock_timeout: while a long statement such as Coder's
-- rollup holds one of the tables, the writers go on. Only then does the
-- request wait in the queue, for at most lock_timeout. A failed NOWAIT
-- attempt releases the locks it took, because its block is rolled back.
DO $ip_body$
DECLARE
  deadline timestamptz := clock_timestamp() + current_setting('lock_timeout')::interval;
BEGIN
  WHILE clock_timestamp() < deadline LOOP
    BEGIN
      LOCK TABLE {{tables}} IN ACCESS EXCLUSIVE MODE NOWAIT;
      RETURN;
    EXCEPTION WHEN lock_not_available THEN
      PERFORM pg_sleep(0.02);
    END;
  END LOOP;
  LOCK TABLE {{tables}} IN ACCESS EXCLUSIVE MODE;
END
$ip_body$;
