-- Parameters: $1 table schema, $2 table name, $3 action, $4 parent table
-- (null for a walked table), $5 key columns, $6 whether the walk is already
-- complete. Starts a table's walk from the beginning, replacing a walk of
-- another action or of a changed primary key.
INSERT INTO {{schema}}.backfill_progress AS p
  (table_schema, table_name, action, parent_table, key_columns, position, rows_walked, rows_changed, rows_merged, started_at, updated_at, finished_at)
VALUES ($1, $2, $3, $4, $5::text[], NULL, 0, 0, 0, now(), now(), CASE WHEN $6::boolean THEN now() END)
ON CONFLICT (table_schema, table_name) DO UPDATE
SET action = EXCLUDED.action,
    parent_table = EXCLUDED.parent_table,
    key_columns = EXCLUDED.key_columns,
    position = NULL,
    rows_walked = 0,
    rows_changed = 0,
    rows_merged = 0,
    started_at = EXCLUDED.started_at,
    updated_at = EXCLUDED.updated_at,
    finished_at = EXCLUDED.finished_at;
