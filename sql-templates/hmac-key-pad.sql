-- Returns K' XOR the pad byte repeated 64 times, where K' is the key
-- zero-padded to SHA-256's 64-byte block, and a key longer than the block is
-- hashed first (RFC 2104, section 2). With the pad bytes 0x36 (ipad) and 0x5c
-- (opad) these are the two padded keys of HMAC-SHA256. The keys table stores
-- both for each key, so that a pseudonym costs two sha256() calls.
CREATE OR REPLACE FUNCTION {{schema}}.hmac_key_pad(key bytea, pad integer)
RETURNS bytea
LANGUAGE plpgsql
IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $ip_body$
DECLARE
  block bytea := key;
BEGIN
  IF pad < 0 OR pad > 255 THEN
    RAISE EXCEPTION 'insights-privacy: HMAC pad must be a byte value from 0 to 255, got %', pad;
  END IF;

  IF octet_length(block) > 64 THEN
    block := sha256(block);
  END IF;
  block := block || decode(repeat('00', 64 - octet_length(block)), 'hex');

  FOR i IN 0..63 LOOP
    block := set_byte(block, i, get_byte(block, i) # pad);
  END LOOP;
  RETURN block;
END
$ip_body$;

REVOKE ALL ON FUNCTION {{schema}}.hmac_key_pad(bytea, integer) FROM PUBLIC;
