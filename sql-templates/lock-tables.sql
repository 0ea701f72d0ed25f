-- Takes, at the start, the strongest lock any later statement needs on the
-- usage tables (DROP TRIGGER and ALTER TABLE … DROP CONSTRAINT need ACCESS
-- EXCLUSIVE). Upgrading a weaker lock later could deadlock with Coder's
-- rollup, which reads the raw tables before it writes the rollup table.
-- Waiting here also lets writers in flight commit, so every row they wrote
-- is visible to the conversion below.
LOCK TABLE {{tables}} IN ACCESS EXCLUSIVE MODE;
