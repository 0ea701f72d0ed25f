-- Pseudonymizes the app sessions that match the range condition: the cut-over's
-- window, or one backfill batch (whose range takes the parameters $1, the
-- batch's last key, and $2, the previous position). A session whose
-- pseudonymized twin exists (same pseudonym, agent and session id, the
-- table's unique key) is merged into the twin: earliest start, latest end and
-- largest request count, because the collector reports running totals. The
-- raw row is then deleted. Every other session gets its pseudonym in place.
WITH candidates AS MATERIALIZED (
  SELECT t.id,
         {{schema}}.pseudonym(t.user_id, t.{{timeColumn}}) AS pseudonym,
         t.agent_id,
         t.session_id,
         t.session_started_at,
         t.session_ended_at,
         t.requests
  FROM {{table}} AS t
  WHERE {{range}}
    AND NOT {{schema}}.is_pseudonym(t.user_id)
),
merged AS (
  UPDATE {{table}} AS twin
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
  DELETE FROM {{table}} AS t
  USING merged AS m
  WHERE t.id = m.id
  RETURNING t.id
),
converted AS (
  UPDATE {{table}} AS t
  SET user_id = c.pseudonym
  FROM candidates AS c
  WHERE t.id = c.id
    AND NOT EXISTS (SELECT 1 FROM merged AS m WHERE m.id = c.id)
  RETURNING 1
)
SELECT (SELECT count(*) FROM converted) AS changed,
       (SELECT count(*) FROM removed) AS merged;
