-- The first bucket that Coder's rollup recomputes, as UTC text that reads
-- back to the same microsecond whatever the session's DateStyle; null
-- without any agent stats or rollup rows. Every row that a cut-over
-- converts ahead of its transaction lies at or after it.
SELECT to_char(({{rollupFrom}}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS window_start;
