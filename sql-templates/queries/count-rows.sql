-- Rows in total, rows whose user id is a real users.id, and pseudonymized rows.
SELECT count(*) AS total,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {{users}} AS u WHERE u.id = t.{{column}})) AS identifiable,
       count(*) FILTER (WHERE substr(t.{{column}}::text, 15, 1) = '8') AS pseudonymized
FROM {{table}} AS t;
