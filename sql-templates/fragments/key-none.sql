-- The FROM clause that selects the key of rotation policy none for a row
-- timestamp, as the key row k. It is the key whose [valid_from,
-- valid_until) contains the timestamp, where a NULL bound is open. The
-- latest start wins, then the newest row. apply creates the first key with
-- no start, and
-- rotate-key adds one that starts at the next half hour. A NULL timestamp
-- selects a key that has neither bound, so callers must not pass one. Every
-- name is schema-qualified, because the trigger functions run this with the
-- writer's search_path.
FROM {{schema}}.keys AS k
WHERE k.policy OPERATOR(pg_catalog.=) 'none'
  AND (k.valid_from IS NULL OR k.valid_from OPERATOR(pg_catalog.<=) {{rowTime}})
  AND (k.valid_until IS NULL OR {{rowTime}} OPERATOR(pg_catalog.<) k.valid_until)
ORDER BY k.valid_from DESC NULLS LAST, k.id DESC
LIMIT 1
