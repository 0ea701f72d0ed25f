-- Parameters: $1 table oid. The rewrite rules on a table, which act on a
-- statement before any trigger sees its rows.
SELECT r.rulename AS name, r.ev_type AS event, r.ev_enabled AS enabled
FROM pg_catalog.pg_rewrite AS r
WHERE r.ev_class = $1::oid
  AND r.rulename <> '_RETURN'
ORDER BY r.rulename;
