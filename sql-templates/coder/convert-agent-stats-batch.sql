-- Parameters: $1 the created_at to continue from (UTC text), $2 the batch
-- size. Converts the next raw agent stats of the rollup window, oldest
-- first, and returns how many it converted and the newest created_at among
-- them, from which the next batch continues. Rows at that created_at are
-- read again by the next batch but skipped, because they hold pseudonyms by
-- then. The trigger pseudonymizes every row written meanwhile, so a batch
-- that converts fewer rows than the batch size is the last.
WITH batch AS MATERIALIZED (
  SELECT t.id, t.{{timeColumn}} AS row_time
  FROM {{agentStats}} AS t
  WHERE t.{{timeColumn}} >= ($1::timestamp AT TIME ZONE 'UTC')
    AND NOT {{schema}}.is_pseudonym(t.user_id)
  ORDER BY t.{{timeColumn}}
  LIMIT $2
),
converted AS (
  UPDATE {{agentStats}} AS t
  SET user_id = {{schema}}.pseudonym(t.user_id, t.{{timeColumn}})
  FROM batch AS b
  WHERE t.id = b.id
  RETURNING 1
)
SELECT (SELECT count(*) FROM converted) AS changed,
       (SELECT to_char(max(b.row_time) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') FROM batch AS b) AS last_time;
