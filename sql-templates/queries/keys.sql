-- Key fingerprints and ages; never the keys themselves.
SELECT k.id, k.fingerprint, k.created_at
FROM {{schema}}.keys AS k
ORDER BY k.id DESC;
