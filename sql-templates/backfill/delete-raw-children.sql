-- Parameters: as delete-raw-rows.sql. Deletes the child rows of the batch's
-- parent rows that have a real user id, before the parents themselves, so
-- that this works whatever ON DELETE action the foreign key has.
WITH removed AS (
  DELETE FROM {{child}} AS c
  USING {{parent}} AS t
  WHERE {{parentJoin}}
    AND {{range}}
    AND substr(t.{{userColumn}}::text, 15, 1) <> '8'
  RETURNING 1
)
SELECT count(*) AS changed, 0 AS merged
FROM removed;
