-- Parameters: $1 table oid, $2 constraint name. The constraint's type and comment.
SELECT con.conname AS name,
       con.contype AS type,
       pg_catalog.obj_description(con.oid, 'pg_constraint') AS comment
FROM pg_catalog.pg_constraint AS con
WHERE con.conrelid = $1::oid
  AND con.conname = $2;
