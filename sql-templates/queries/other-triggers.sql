-- Parameters: $1 table oid, $2 the tool's trigger name. Every other
-- user-defined trigger on the table, and a digest of its function's source,
-- so that an accepted trigger whose function later changes is reported again.
SELECT t.tgname AS name,
       t.tgenabled AS enabled,
       t.tgtype::int AS type,
       fn.nspname AS function_schema,
       p.proname AS function_name,
       md5(pg_catalog.pg_get_triggerdef(t.oid) || E'\n' || coalesce(p.prosrc, '')) AS digest
FROM pg_catalog.pg_trigger AS t
JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace AS fn ON fn.oid = p.pronamespace
WHERE t.tgrelid = $1::oid
  AND t.tgname <> $2
  AND NOT t.tgisinternal
ORDER BY t.tgname;
