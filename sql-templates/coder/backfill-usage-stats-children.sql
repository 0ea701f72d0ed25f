-- Parameters: as backfill-usage-stats.sql, which runs first and leaves a
-- pseudonymized parent for every raw parent of the batch. Moves the raw
-- parents' child rows to the pseudonymized parent. A child row whose twin
-- (same key, pseudonymized user id) exists is merged into it by the rules
-- of its parent, and any other is copied. Then the raw child rows are
-- deleted.
WITH raw AS MATERIALIZED (
  SELECT c.*, {{schema}}.pseudonym(c.{{userColumn}}, c.{{timeColumn}}) AS pseudonym
  FROM {{child}} AS c
  JOIN {{parent}} AS t ON {{parentJoin}}
  WHERE {{range}}
    AND NOT {{schema}}.is_pseudonym(t.{{parentUserColumn}})
),
merged AS (
  UPDATE {{child}} AS twin
  SET {{mergeAssignments}}
  FROM raw
  WHERE {{twinMatch}}
  RETURNING 1
),
copied AS (
  INSERT INTO {{child}} ({{columns}})
  SELECT {{copiedColumns}}
  FROM raw
  WHERE NOT EXISTS (SELECT 1 FROM {{child}} AS twin WHERE {{twinMatch}})
  RETURNING 1
),
removed AS (
  DELETE FROM {{child}} AS c
  USING raw
  WHERE {{rawMatch}}
  RETURNING 1
)
SELECT (SELECT count(*) FROM copied) AS changed,
       (SELECT count(*) FROM merged) AS merged;
