-- Key fingerprints, periods and ages; never the keys themselves.
SELECT k.id, k.fingerprint, k.created_at, k.policy, k.valid_from, k.valid_until
FROM {{schema}}.keys AS k
ORDER BY k.valid_from DESC NULLS LAST, k.id DESC;
