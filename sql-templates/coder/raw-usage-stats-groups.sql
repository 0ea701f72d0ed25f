-- Parameters: $1 the start of the rollup window (UTC text). The buckets
-- (as UTC text) and templates that hold rollup rows with a real user id
-- inside the window; a cut-over converts one of them per transaction ahead
-- of its own.
SELECT DISTINCT to_char(t.start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS start_time, t.template_id
FROM {{table}} AS t
WHERE t.start_time >= ($1::timestamp AT TIME ZONE 'UTC')
  AND NOT {{schema}}.is_pseudonym(t.user_id)
ORDER BY 1, 2;
