-- pgcrypto provides hmac() and gen_random_bytes(). When the database does
-- not have it yet, it is created inside the private schema so that
-- "apply --mode off" removes it with the schema.
CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA {{schema}};
