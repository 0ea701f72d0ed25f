-- Parameters: $1 the key table's qualified name. Its file node, which
-- VACUUM FULL replaces.
SELECT pg_catalog.pg_relation_filenode($1::regclass)::text AS file;
