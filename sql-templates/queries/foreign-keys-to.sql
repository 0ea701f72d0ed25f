-- Parameters: $1 referencing table oid, $2 referenced table oid, $3 column
-- name. Foreign keys of the first table to the second that include the column.
SELECT con.conname AS name,
       con.convalidated AS validated,
       con.confupdtype AS on_update,
       con.confdeltype AS on_delete,
       con.confmatchtype AS match_type,
       con.condeferrable AS deferrable,
       con.condeferred AS deferred,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, i)
             JOIN pg_catalog.pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.i) AS columns,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, i)
             JOIN pg_catalog.pg_attribute AS a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
             ORDER BY k.i) AS referenced_columns
FROM pg_catalog.pg_constraint AS con
WHERE con.contype = 'f'
  AND con.conrelid = $1::oid
  AND con.confrelid = $2::oid
  AND EXISTS (SELECT 1 FROM unnest(con.conkey) AS k(attnum)
              JOIN pg_catalog.pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
              WHERE a.attname = $3)
ORDER BY con.conname;
