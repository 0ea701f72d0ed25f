-- SHARE ROW EXCLUSIVE is the lock CREATE TRIGGER takes anyway. Taking it on
-- every table at once, in a fixed order, waits for the writers in flight to
-- commit, so every row they wrote is visible to the conversion below, and no
-- writer can interleave with this transaction.
LOCK TABLE {{tables}} IN SHARE ROW EXCLUSIVE MODE;
