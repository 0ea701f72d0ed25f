-- The recorded enforcement, or no row when the schema or its state table is
-- missing. digest_matches is null for a state that an earlier version
-- recorded without a digest.
SELECT s.mode, s.profile, s.scope, s.options, s.tool_version, s.applied_at, s.applied_by, s.tables,
       CASE WHEN s.digest IS NULL THEN NULL
            ELSE s.digest = {{schema}}.state_digest(s.mode, s.profile, s.scope, s.options, s.tool_version, s.tables, s.applied_at, s.applied_by)
       END AS digest_matches
FROM {{schema}}.state AS s;
