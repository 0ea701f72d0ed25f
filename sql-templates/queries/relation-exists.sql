-- Parameters: $1 schema, $2 relation name.
SELECT EXISTS (
  SELECT 1 FROM pg_catalog.pg_class AS c
  JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND c.relname = $2
) AS present;
