-- Rows whose user id is not a version-8 pseudonym, the rows a backfill
-- converts or deletes. Written without the tool's functions, which may not
-- be installed yet. A full scan of the table.
SELECT count(*) AS rows
FROM {{table}} AS t
WHERE substr(t.{{column}}::text, 15, 1) <> '8';
