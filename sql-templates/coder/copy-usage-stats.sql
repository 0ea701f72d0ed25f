-- Rollup rows in the window Coder recomputes get a pseudonymized copy; the
-- raw rows are deleted afterwards. Copy, then delete, because child tables
-- reference (start_time, template_id, user_id) and cannot follow an UPDATE
-- of the key. Where a pseudonymized row already exists for the bucket, the
-- copy is skipped: the next rollup recomputes that bucket from raw rows and
-- overwrites it. The range condition selects the whole window, or one
-- bucket and template of it (parameters $1 start_time, $2 template_id).
INSERT INTO {{table}} ({{columns}})
SELECT {{convertedColumns}}
FROM {{table}}
WHERE {{range}}
  AND NOT {{schema}}.is_pseudonym(user_id)
ON CONFLICT DO NOTHING;
