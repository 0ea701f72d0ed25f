-- Key periods that forget-keys deleted, newest first.
SELECT f.fingerprint, f.policy, f.valid_from, f.valid_until, f.created_at, f.forgotten_at, f.forgotten_by
FROM {{schema}}.forgotten_keys AS f
ORDER BY f.valid_until DESC, f.forgotten_at DESC;
