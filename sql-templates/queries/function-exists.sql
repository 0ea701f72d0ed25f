-- Parameters: $1 schema, $2 function name.
SELECT EXISTS (
  SELECT 1 FROM pg_catalog.pg_proc AS p
  JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
  WHERE n.nspname = $1 AND p.proname = $2
) AS present;
