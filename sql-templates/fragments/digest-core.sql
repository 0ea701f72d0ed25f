-- The same HMAC-SHA256 as digest-pgcrypto.sql on core sha256() (PostgreSQL
-- 11+), computed as
--   SHA256((K' XOR opad) || SHA256((K' XOR ipad) || message))
-- from the two padded keys that the keys table stores with each key, so each
-- pseudonym costs two sha256() calls. NULL when the key row lacks its padded
-- keys.
pg_catalog.sha256(k.outer_key_pad OPERATOR(pg_catalog.||) pg_catalog.sha256(k.inner_key_pad OPERATOR(pg_catalog.||) pg_catalog.decode({{label}}, 'hex') OPERATOR(pg_catalog.||) pg_catalog.uuid_send({{id}})))
