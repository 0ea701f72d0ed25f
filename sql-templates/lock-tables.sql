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
-- request wait in the queue, which a table read by every request (users)
-- may need, and for at most a quarter of lock_timeout and 500 ms. A failed
-- NOWAIT attempt releases the locks it took, because its block is rolled
-- back.
DO $ip_body$
DECLARE
  configured text := current_setting('lock_timeout');
  timeout interval := configured::interval;
  deadline timestamptz := clock_timestamp() + timeout;
BEGIN
  WHILE clock_timestamp() < deadline LOOP
    BEGIN
      LOCK TABLE {{tables}} IN ACCESS EXCLUSIVE MODE NOWAIT;
      RETURN;
    EXCEPTION WHEN lock_not_available THEN
      PERFORM pg_sleep(0.02);
    END;
  END LOOP;
  IF timeout > interval '0' THEN
    PERFORM set_config('lock_timeout', ceil(extract(epoch FROM least(timeout / 4, interval '500 milliseconds')) * 1000)::text || 'ms', true);
  END IF;
  LOCK TABLE {{tables}} IN ACCESS EXCLUSIVE MODE;
  PERFORM set_config('lock_timeout', configured, true);
END
$ip_body$;
