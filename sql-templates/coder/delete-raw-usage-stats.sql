-- Deletes the raw rows whose pseudonymized copies were inserted before, in
-- the same range as copy-usage-stats.sql. Child tables are handled before
-- their parent, so this works whatever ON DELETE action their foreign keys
-- have.
DELETE FROM {{table}}
WHERE {{range}}
  AND NOT {{schema}}.is_pseudonym(user_id);
