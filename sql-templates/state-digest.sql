-- A SHA-256 digest of the recorded state, stored with it by record-state.sql
-- and recomputed by status. A row edited by hand no longer matches its
-- digest. The digest detects mistakes, not attacks: anyone who can edit the
-- row can also recompute it. applied_at is formatted in UTC so that the
-- session's TimeZone and DateStyle cannot change the text.
CREATE OR REPLACE FUNCTION {{schema}}.state_digest(
  mode text, profile text, scope text, options jsonb, tool_version text,
  tables jsonb, applied_at timestamptz, applied_by text)
RETURNS text
LANGUAGE sql
STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $ip_body$
SELECT encode(sha256(convert_to(concat_ws(E'\n',
  mode, profile, coalesce(scope, ''), options::text, tool_version, tables::text,
  to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), applied_by), 'UTF8')), 'hex')
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.state_digest(text, text, text, jsonb, text, jsonb, timestamptz, text) FROM PUBLIC;
