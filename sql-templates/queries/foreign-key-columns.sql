-- Parameters: $1 referencing table oid, $2 referenced table oid. Each
-- foreign key between the two, with its columns on both sides in key order.
SELECT con.conname AS name,
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
ORDER BY con.conname;
