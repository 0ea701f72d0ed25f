-- Parameters: $1 the recorded position (absent in a walk's first batch). Rows
-- left to walk, and how many of them have a real user id, for the progress
-- bar and the summary. A scan of the rest of the table.
SELECT count(*) AS rows,
       count(*) FILTER (WHERE substr(t.{{userColumn}}::text, 15, 1) <> '8') AS real_ids
FROM {{table}} AS t
WHERE {{after}};
