-- Only when the tool created pgcrypto inside its own schema.
DROP EXTENSION IF EXISTS pgcrypto;
