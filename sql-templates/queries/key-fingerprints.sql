-- Parameters: $1 key ids. The fingerprints the database computed for them.
SELECT k.id, k.fingerprint
FROM {{schema}}.keys AS k
WHERE k.id = ANY ($1::integer[]);
