-- Parameters: $1 table schema, $2 table name. Locks the row, so that the
-- batch that reads a position is the only one to move it.
SELECT p.action, p.parent_table, p.key_columns, p.position, p.rows_walked, p.rows_changed, p.rows_merged, p.finished_at
FROM {{schema}}.backfill_progress AS p
WHERE p.table_schema = $1
  AND p.table_name = $2
FOR UPDATE;
