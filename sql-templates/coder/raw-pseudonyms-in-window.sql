-- Counts pseudonymized rows in the raw tables that Coder's rollup will still
-- read. Scope rollup cannot start while there are any: the rollup would
-- group them apart from the same users' real ids, and the trigger would then
-- map both groups to one key, which makes the rollup's upsert fail.
SELECT (SELECT count(*) FROM {{agentStats}}
        WHERE created_at >= {{rollupFrom}} AND {{schema}}.is_pseudonym(user_id))
     + (SELECT count(*) FROM {{appStats}}
        WHERE session_ended_at >= {{rollupFrom}} AND {{schema}}.is_pseudonym(user_id)) AS rows;
