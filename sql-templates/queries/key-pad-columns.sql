-- Parameters: $1 schema. The padded-key columns of the keys table that are
-- generated from the key, as key-pads.sql creates them.
SELECT a.attname AS name
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = $1
  AND c.relname = 'keys'
  AND a.attname IN ('inner_key_pad', 'outer_key_pad')
  AND a.attgenerated = 's'
  AND NOT a.attisdropped
ORDER BY a.attname;
