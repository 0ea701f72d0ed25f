-- The recorded enforcement, or no row when the schema or its state table is missing.
SELECT s.mode, s.profile, s.scope, s.options, s.tool_version, s.applied_at, s.applied_by
FROM {{schema}}.state AS s;
