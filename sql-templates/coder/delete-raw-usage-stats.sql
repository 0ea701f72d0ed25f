-- Deletes the raw rows whose pseudonymized copies were inserted before.
-- Child tables are handled before their parent, so this works whatever
-- ON DELETE action their foreign keys have.
DELETE FROM {{table}}
WHERE start_time >= {{rollupFrom}}
  AND NOT {{schema}}.is_pseudonym(user_id);
