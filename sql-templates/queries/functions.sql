-- Parameters: $1 schema. The tool's functions with what drift detection compares.
SELECT p.proname AS name,
       p.prosrc AS body,
       p.prosecdef AS security_definer,
       coalesce(array_to_string(p.proconfig, ','), '') AS config,
       pg_get_userbyid(p.proowner) AS owner,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
FROM pg_catalog.pg_proc AS p
JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname = $1;
