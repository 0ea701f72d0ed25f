-- Parameters: $1 table oid. The primary key's columns in key order, with
-- their types as format_type spells them, for the keyset walk of a backfill.
SELECT a.attname AS name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
FROM pg_catalog.pg_constraint AS con
CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, position)
JOIN pg_catalog.pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
WHERE con.conrelid = $1::oid
  AND con.contype = 'p'
ORDER BY k.position;
