-- The recorded enforcement of a state table that an earlier version made,
-- without the tables and digest columns; apply adds them.
SELECT s.mode, s.profile, s.scope, s.options, s.tool_version, s.applied_at, s.applied_by,
       '{}'::jsonb AS tables, NULL::boolean AS digest_matches
FROM {{schema}}.state AS s;
