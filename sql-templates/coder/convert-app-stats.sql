-- Converts the app sessions that Coder's rollup still reads or that its app
-- stats collector may upsert again: every session that ended within the
-- rollup window or the last hour. A session that already has a
-- pseudonymized twin (the same agent and session id) is merged into the
-- twin: earliest start, latest end, largest request count, because the
-- collector reports running totals. The raw row is then deleted.
WITH candidates AS (
  SELECT s.id,
         {{schema}}.pseudonym(s.user_id, s.{{timeColumn}}) AS pseudonym,
         s.agent_id,
         s.session_id,
         s.session_started_at,
         s.session_ended_at,
         s.requests
  FROM {{appStats}} AS s
  WHERE s.session_ended_at >= LEAST({{rollupFrom}}, now() - interval '1 hour')
    AND NOT {{schema}}.is_pseudonym(s.user_id)
),
merged AS (
  UPDATE {{appStats}} AS twin
  SET session_started_at = LEAST(twin.session_started_at, c.session_started_at),
      session_ended_at = GREATEST(twin.session_ended_at, c.session_ended_at),
      requests = GREATEST(twin.requests, c.requests)
  FROM candidates AS c
  WHERE twin.user_id = c.pseudonym
    AND twin.agent_id = c.agent_id
    AND twin.session_id = c.session_id
  RETURNING c.id
),
removed AS (
  DELETE FROM {{appStats}} AS s
  USING merged AS m
  WHERE s.id = m.id
  RETURNING s.id
)
UPDATE {{appStats}} AS s
SET user_id = c.pseudonym
FROM candidates AS c
WHERE s.id = c.id
  AND NOT EXISTS (SELECT 1 FROM removed AS r WHERE r.id = c.id);
