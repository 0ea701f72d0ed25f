-- Keeps Coder's writers of the tables from writing while one batch of the
-- cut-over converts rows of them. The batch and a writer change the same
-- rows in different orders, so both at once could deadlock, and PostgreSQL
-- would then end one of them. SHARE ROW EXCLUSIVE conflicts with writes but
-- not with reads. The lock is requested without waiting (NOWAIT), every 20
-- ms until lock_timeout, so that no writer queues behind a waiting request;
-- a writer that starts while the batch holds it waits for that batch only.
DO $ip_body$
DECLARE
  deadline timestamptz := clock_timestamp() + current_setting('lock_timeout')::interval;
BEGIN
  LOOP
    BEGIN
      LOCK TABLE {{tables}} IN SHARE ROW EXCLUSIVE MODE NOWAIT;
      RETURN;
    EXCEPTION WHEN lock_not_available THEN
      IF clock_timestamp() >= deadline THEN
        RAISE;
      END IF;
      PERFORM pg_sleep(0.02);
    END;
  END LOOP;
END
$ip_body$;
