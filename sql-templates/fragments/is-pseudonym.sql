-- True when the id is a pseudonym: an RFC 9562 version-8 UUID, whose version
-- nibble is the high four bits of byte 6. Real ids are version 4 (Coder uses
-- random UUIDs). NULL for a NULL id.
(pg_catalog.get_byte(pg_catalog.uuid_send({{id}}), 6) OPERATOR(pg_catalog.>>) 4 OPERATOR(pg_catalog.=) 8)
