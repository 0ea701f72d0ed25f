-- Parameters: $1 table schema, $2 table name, $3 new position (null for a
-- child table), $4 rows walked, $5 rows changed, $6 rows merged, $7 whether
-- the walk is complete. Runs in the transaction of the batch it describes.
UPDATE {{schema}}.backfill_progress
SET position = $3::text[],
    rows_walked = rows_walked + $4,
    rows_changed = rows_changed + $5,
    rows_merged = rows_merged + $6,
    updated_at = now(),
    finished_at = CASE WHEN $7::boolean THEN now() END
WHERE table_schema = $1
  AND table_name = $2;
