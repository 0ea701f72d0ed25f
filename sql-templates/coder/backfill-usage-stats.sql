-- Parameters: $1 last key of the batch, $2 previous position (absent in a
-- walk's first batch). Pseudonymizes the rollup rows of one batch. Child
-- tables reference the key, which includes user_id, so each raw row is
-- copied under its pseudonym rather than updated. The raw rows are deleted
-- once their child rows have moved (backfill-usage-stats-children.sql).
--
-- Where a pseudonymized row for the same bucket and template exists, the
-- raw row is merged into it instead. The two rows were computed from
-- disjoint raw rows, because each raw row has one user id. So minute
-- columns add up, capped at the 30 minutes of a bucket (merge-minutes.sql),
-- and app_usage_mins adds up per app with the same cap
-- (merge-app-minutes.sql). median_latency_ms is that of the row with more
-- usage minutes (merge-latency.sql). Other columns keep the values of the
-- pseudonymized row.
WITH raw AS MATERIALIZED (
  SELECT t.*, {{schema}}.pseudonym(t.{{userColumn}}, t.{{timeColumn}}) AS pseudonym
  FROM {{table}} AS t
  WHERE {{range}}
    AND NOT {{schema}}.is_pseudonym(t.{{userColumn}})
),
merged AS (
  UPDATE {{table}} AS twin
  SET {{mergeAssignments}}
  FROM raw
  WHERE {{twinMatch}}
  RETURNING 1
),
copied AS (
  INSERT INTO {{table}} ({{columns}})
  SELECT {{copiedColumns}}
  FROM raw
  WHERE NOT EXISTS (SELECT 1 FROM {{table}} AS twin WHERE {{twinMatch}})
  RETURNING 1
)
SELECT (SELECT count(*) FROM copied) AS changed,
       (SELECT count(*) FROM merged) AS merged;
