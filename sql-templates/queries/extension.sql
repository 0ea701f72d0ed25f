-- Parameters: $1 extension name. Its schema when installed, and whether the
-- server offers it at all.
SELECT (SELECT n.nspname
        FROM pg_catalog.pg_extension AS e
        JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace
        WHERE e.extname = $1) AS installed_schema,
       EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = $1) AS available;
