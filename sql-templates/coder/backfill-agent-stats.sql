-- Parameters: $1 last key of the batch, $2 previous position (absent in a
-- walk's first batch). Pseudonymizes the agent stats of one batch in place.
-- Rows that hold a pseudonym already are skipped, so no id is hashed twice.
-- No unique key includes user_id, so two rows never collide. Like the
-- trigger, pseudonym() takes the row's own time, which selects the key of
-- its period.
WITH converted AS (
  UPDATE {{table}} AS t
  SET {{userColumn}} = {{schema}}.pseudonym(t.{{userColumn}}, t.{{timeColumn}})
  WHERE {{range}}
    AND NOT {{schema}}.is_pseudonym(t.{{userColumn}})
  RETURNING 1
)
SELECT count(*) AS changed, 0 AS merged
FROM converted;
