-- HMAC-SHA256(key, domain label || the 16 bytes of the id) with pgcrypto's
-- hmac(), for the key row k of the key selection it is used with. The label
-- is a hex literal that decode() turns into bytes when the query is planned
-- (decode is immutable), so neither an encoding conversion nor a session's
-- standard_conforming_strings setting can change it.
{{hmac}}(pg_catalog.decode({{label}}, 'hex') OPERATOR(pg_catalog.||) pg_catalog.uuid_send({{id}}), k.key, 'sha256'::pg_catalog.text)
