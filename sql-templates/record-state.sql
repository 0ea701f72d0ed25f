-- Parameters: $1 mode, $2 profile, $3 scope, $4 options (jsonb), $5 tool version.
INSERT INTO {{schema}}.state (singleton, mode, profile, scope, options, tool_version, applied_at, applied_by)
VALUES (true, $1, $2, $3, $4::jsonb, $5, now(), session_user)
ON CONFLICT (singleton) DO UPDATE
SET mode = EXCLUDED.mode,
    profile = EXCLUDED.profile,
    scope = EXCLUDED.scope,
    options = EXCLUDED.options,
    tool_version = EXCLUDED.tool_version,
    applied_at = EXCLUDED.applied_at,
    applied_by = EXCLUDED.applied_by;
