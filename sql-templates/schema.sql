-- The tool's private schema: its state, its keys and the enforcement
-- functions. No role but its owner may use it; the triggers reach the
-- functions by OID, so writers need no privilege here.
CREATE SCHEMA IF NOT EXISTS {{schema}};

REVOKE ALL ON SCHEMA {{schema}} FROM PUBLIC;

COMMENT ON SCHEMA {{schema}} IS 'insights-privacy: enforcement state, keys and functions. Remove with "insights-privacy apply --mode off", not by hand.';

CREATE TABLE IF NOT EXISTS {{schema}}.state (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  mode text NOT NULL CHECK (mode IN ('anonymize', 'disable')),
  profile text NOT NULL,
  scope text CHECK (scope IN ('source', 'rollup')),
  options jsonb NOT NULL DEFAULT '{}'::jsonb,
  tool_version text NOT NULL,
  applied_at timestamptz NOT NULL,
  applied_by text NOT NULL
);

-- One row per key; the newest row is the key in use. Keys are generated
-- here by the server's random source and never leave the database.
CREATE TABLE IF NOT EXISTS {{schema}}.keys (
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  key bytea NOT NULL CHECK (octet_length(key) = 32),
  fingerprint text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Without this, ANALYZE would copy key values into pg_statistic.
ALTER TABLE {{schema}}.keys ALTER COLUMN key SET STATISTICS 0;

REVOKE ALL ON ALL TABLES IN SCHEMA {{schema}} FROM PUBLIC;
