-- Parameters: $1 table oid. Roles that can switch enforcement off on the
-- table (superusers, its owner and the owner's members, holders of TRIGGER),
-- and roles that can insert and read it and so compute the pseudonym of an
-- id of their choice.
SELECT r.rolname AS role,
       CASE
         WHEN r.rolsuper THEN 'superuser'
         WHEN pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE') THEN 'table owner'
         WHEN has_table_privilege(r.oid, c.oid, 'TRIGGER') THEN 'TRIGGER privilege'
         ELSE 'INSERT and SELECT'
       END AS reason,
       (r.rolsuper OR pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE') OR has_table_privilege(r.oid, c.oid, 'TRIGGER')) AS can_bypass
FROM pg_catalog.pg_roles AS r
CROSS JOIN pg_catalog.pg_class AS c
WHERE c.oid = $1::oid
  AND r.rolname !~ '^pg_'
  AND (r.rolsuper
       OR pg_catalog.pg_has_role(r.oid, c.relowner, 'USAGE')
       OR has_table_privilege(r.oid, c.oid, 'TRIGGER')
       OR (has_table_privilege(r.oid, c.oid, 'INSERT') AND has_table_privilege(r.oid, c.oid, 'SELECT')))
ORDER BY can_bypass DESC, r.rolname;
