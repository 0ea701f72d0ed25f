-- Parameters: $1 the start of the new key, the next half-hour boundary. The
-- key of policy none in use ends there and a new key starts there, so every
-- 30-minute bucket of Coder's rollup lies under one key: a bucket that the
-- rollup recomputes maps its real ids with the key it was first stored under.
UPDATE {{schema}}.keys AS k
SET valid_until = $1::timestamptz
WHERE k.policy = 'none'
  AND k.valid_until IS NULL;

SELECT {{schema}}.add_key({{schema}}.random_key(), 'none', $1::timestamptz, NULL) AS id;
