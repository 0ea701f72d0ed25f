-- The recorded backfill of every table, and whether a backfill holds its
-- session lock right now (Parameters: $1 and $2, the two keys of that lock).
SELECT p.table_schema,
       p.table_name,
       p.action,
       p.parent_table,
       p.key_columns,
       p.position,
       p.rows_walked,
       p.rows_changed,
       p.rows_merged,
       p.started_at,
       p.updated_at,
       p.finished_at,
       EXISTS (
         SELECT 1 FROM pg_catalog.pg_locks AS l
         WHERE l.locktype = 'advisory'
           AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())
           AND l.classid::bigint = $1
           AND l.objid::bigint = $2
           AND l.objsubid = 2
           AND l.granted
       ) AS running
FROM {{schema}}.backfill_progress AS p
ORDER BY p.table_schema, p.table_name;
