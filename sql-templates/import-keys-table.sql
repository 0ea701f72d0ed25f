-- Receives the imported keys through COPY, whose data rows the server never
-- logs, unlike the parameters of a statement. Dropped at the end of the
-- transaction, so no copy of a key stays behind.
CREATE TEMP TABLE insights_privacy_import (
  position integer PRIMARY KEY,
  key_hex text NOT NULL
) ON COMMIT DROP;
