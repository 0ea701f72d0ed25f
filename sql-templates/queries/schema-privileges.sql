-- Parameters: $1 schema name. Whether the current role owns the schema (null
-- when it does not exist) and whether it may create schemas.
SELECT current_user AS role,
       (SELECT pg_catalog.pg_has_role(current_user, n.nspowner, 'USAGE')
        FROM pg_catalog.pg_namespace AS n WHERE n.nspname = $1) AS schema_owned,
       has_database_privilege(current_database(), 'CREATE') AS can_create;
