-- Parameters: $1 table oid, $2 trigger name. The trigger and the function it calls.
SELECT t.tgenabled AS enabled,
       t.tgtype::int AS type,
       ARRAY(SELECT a.attname::text FROM unnest(t.tgattr::int2[]) AS k(attnum)
             JOIN pg_catalog.pg_attribute AS a ON a.attrelid = t.tgrelid AND a.attnum = k.attnum
             ORDER BY a.attname) AS update_columns,
       fn.nspname AS function_schema,
       p.proname AS function_name,
       pg_catalog.pg_get_triggerdef(t.oid) AS definition
FROM pg_catalog.pg_trigger AS t
JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace AS fn ON fn.oid = p.pronamespace
WHERE t.tgrelid = $1::oid
  AND t.tgname = $2
  AND NOT t.tgisinternal;
