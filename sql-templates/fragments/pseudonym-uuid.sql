-- The pseudonym of a 32-byte HMAC digest: its first 16 bytes as a UUID, with
-- the RFC 9562 version field set to 8 and the variant bits set to 10.
pg_catalog.encode(pg_catalog.substr(pg_catalog.set_byte(pg_catalog.set_byte({{digest}}, 6, pg_catalog.get_byte({{digest}}, 6) OPERATOR(pg_catalog.&) 15 OPERATOR(pg_catalog.|) 128), 8, pg_catalog.get_byte({{digest}}, 8) OPERATOR(pg_catalog.&) 63 OPERATOR(pg_catalog.|) 128), 1, 16), 'hex')::pg_catalog.uuid
