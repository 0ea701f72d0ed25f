-- The first half-hour boundary at least one minute after the transaction's
-- start, counted from the Unix epoch, so in UTC whatever the session's
-- TimeZone. Coder's rollup buckets start at these boundaries in every time
-- zone whose offset is a multiple of 30 minutes. The minute leaves time for
-- the rotation to commit before rows stamped after the boundary arrive.
SELECT to_timestamp(ceil((extract(epoch FROM now()) + 60) / 1800) * 1800) AS boundary,
       now() AS now;
