-- Parameters: $1 last key of the batch, $2 previous position (absent in a
-- walk's first batch). Deletes the rows of one batch whose user id is not a
-- version-8 pseudonym. Written without the tool's functions, because purge
-- also runs under mode disable, which does not install them.
WITH removed AS (
  DELETE FROM {{table}} AS t
  WHERE {{range}}
    AND substr(t.{{userColumn}}::text, 15, 1) <> '8'
  RETURNING 1
)
SELECT count(*) AS changed, 0 AS merged
FROM removed;
