-- Creates the first key of rotation policy none with random_key() of the
-- HMAC implementation in use, which reads the server's cryptographic random
-- source. The key has no period bounds, so it covers every timestamp until
-- rotate-key ends it. The fingerprint is a truncated SHA-256 of a label and
-- the key: it identifies the key in status output and reveals nothing about it.
INSERT INTO {{schema}}.keys (key, fingerprint)
SELECT fresh.key,
       encode(substr(sha256(convert_to('insights-privacy key fingerprint', 'UTF8') || fresh.key), 1, 8), 'hex')
FROM (SELECT {{schema}}.random_key() AS key) AS fresh
WHERE NOT EXISTS (SELECT 1 FROM {{schema}}.keys AS k WHERE k.policy = 'none');
