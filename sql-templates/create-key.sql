-- Creates the first key with random_key() of the HMAC implementation in use,
-- which reads the server's cryptographic random source. The fingerprint is a
-- truncated SHA-256 of a label and the key: it identifies the key in status
-- output and reveals nothing about it.
INSERT INTO {{schema}}.keys (key, fingerprint)
SELECT fresh.key,
       encode(substr(sha256(convert_to('insights-privacy key fingerprint', 'UTF8') || fresh.key), 1, 8), 'hex')
FROM (SELECT {{schema}}.random_key() AS key) AS fresh
WHERE NOT EXISTS (SELECT 1 FROM {{schema}}.keys);
