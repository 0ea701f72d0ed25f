-- The two padded keys of HMAC-SHA256 for each key: K' XOR ipad (0x36 = 54)
-- and K' XOR opad (0x5c = 92). They are generated columns, so every key gets
-- them whichever statement inserts it, they can never disagree with the key,
-- and ADD COLUMN fills them for the keys of an existing installation. They
-- are exactly as secret as the key: same table, same privileges.
ALTER TABLE {{schema}}.keys
  ADD COLUMN IF NOT EXISTS inner_key_pad bytea GENERATED ALWAYS AS ({{schema}}.hmac_key_pad(key, 54)) STORED,
  ADD COLUMN IF NOT EXISTS outer_key_pad bytea GENERATED ALWAYS AS ({{schema}}.hmac_key_pad(key, 92)) STORED;

-- Without this, ANALYZE would copy the padded keys into pg_statistic.
ALTER TABLE {{schema}}.keys ALTER COLUMN inner_key_pad SET STATISTICS 0, ALTER COLUMN outer_key_pad SET STATISTICS 0;
