-- Parameters: $1 the start of the rollup window (UTC text; null when the
-- window is empty). The ids of the app sessions with a real user id that
-- ended inside the window or within the last hour, the sessions the
-- cut-over converts. A scan of the whole table, which has no index on
-- session_ended_at.
SELECT t.id
FROM {{table}} AS t
WHERE t.session_ended_at >= LEAST($1::timestamp AT TIME ZONE 'UTC', now() - interval '1 hour')
  AND NOT {{schema}}.is_pseudonym(t.user_id)
ORDER BY t.id;
