-- The connected database and the schemas its search_path resolves to, for messages.
SELECT current_database() AS database,
       array_to_string(pg_catalog.current_schemas(false), ', ') AS path;
