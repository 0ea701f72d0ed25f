-- Parameters: $1 table oid. Whether the current role owns the table or is a
-- member of its owner, as CREATE TRIGGER and ALTER TABLE need.
SELECT pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') AS owned
FROM pg_catalog.pg_class AS c
WHERE c.oid = $1::oid;
