-- Parameters: $1 table names (text[]). Returns each name's first match in
-- the connection's search_path, as the application itself resolves it.
SELECT DISTINCT ON (c.relname)
       n.nspname AS schema,
       c.relname AS name,
       c.oid::bigint AS oid,
       pg_get_userbyid(c.relowner) AS owner
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relname = ANY ($1::text[])
  AND c.relkind IN ('r', 'p')
  AND n.nspname = ANY (pg_catalog.current_schemas(false))
ORDER BY c.relname, array_position(pg_catalog.current_schemas(false)::text[], n.nspname::text);
