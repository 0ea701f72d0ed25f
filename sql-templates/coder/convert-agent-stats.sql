-- Coder's rollup recomputes its buckets from the rollup window on; converting
-- those raw agent stats keeps one id per user inside the recomputed window.
UPDATE {{agentStats}}
SET user_id = {{schema}}.pseudonym(user_id, {{timeColumn}})
WHERE created_at >= {{rollupFrom}}
  AND NOT {{schema}}.is_pseudonym(user_id);
