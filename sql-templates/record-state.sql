-- Parameters: $1 mode, $2 profile, $3 scope, $4 options (jsonb), $5 tool version,
-- $6 the usage tables as a jsonb array of [schema, name] pairs. Each table's
-- oid and stored columns (as queries/table-columns.sql lists them) are read here, when the statement runs, because a
-- generated migration runs this statement long after it was written.
WITH usage_tables AS (
  SELECT coalesce(jsonb_object_agg(n.nspname || '.' || c.relname, jsonb_build_object(
           'oid', c.oid::bigint,
           'columns', (SELECT jsonb_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                       FROM pg_catalog.pg_attribute AS a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''))), '{}'::jsonb) AS tables
  FROM jsonb_array_elements($6::jsonb) AS t(pair)
  JOIN pg_catalog.pg_namespace AS n ON n.nspname = t.pair ->> 0
  JOIN pg_catalog.pg_class AS c ON c.relnamespace = n.oid AND c.relname = t.pair ->> 1
)
INSERT INTO {{schema}}.state AS s (singleton, mode, profile, scope, options, tool_version, tables, applied_at, applied_by, digest)
SELECT true, $1, $2, $3, $4::jsonb, $5, u.tables, now(), session_user,
       {{schema}}.state_digest($1, $2, $3, $4::jsonb, $5, u.tables, now(), session_user)
FROM usage_tables AS u
ON CONFLICT (singleton) DO UPDATE
SET mode = EXCLUDED.mode,
    profile = EXCLUDED.profile,
    scope = EXCLUDED.scope,
    options = EXCLUDED.options,
    tool_version = EXCLUDED.tool_version,
    tables = EXCLUDED.tables,
    applied_at = EXCLUDED.applied_at,
    applied_by = EXCLUDED.applied_by,
    digest = EXCLUDED.digest;
