-- Parameters: $1 table oid. Tables with a foreign key to that table, and the
-- key's columns on both sides.
SELECT n.nspname AS schema,
       c.relname AS name,
       c.oid::bigint AS oid,
       pg_get_userbyid(c.relowner) AS owner,
       con.conname AS constraint_name,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, i)
             JOIN pg_catalog.pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
             ORDER BY k.i) AS columns
FROM pg_catalog.pg_constraint AS con
JOIN pg_catalog.pg_class AS c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE con.contype = 'f'
  AND con.confrelid = $1::oid
  AND con.conrelid <> $1::oid
ORDER BY c.relname;
