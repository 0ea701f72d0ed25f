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

-- The identity of each usage table when the state was recorded (its oid and
-- its columns with their types), so that status can tell when an
-- application upgrade re-created or altered a table. digest is
-- state_digest() over the row, so that status can tell when the row was
-- edited by hand. Both are added here for state tables of earlier versions.
ALTER TABLE {{schema}}.state ADD COLUMN IF NOT EXISTS tables jsonb NOT NULL DEFAULT '{}'::jsonb;

ALTER TABLE {{schema}}.state ADD COLUMN IF NOT EXISTS digest text;

-- One row per key; key_id() picks the key for a row's timestamp. Keys are
-- generated here by the server's random source and leave the database only
-- through export-key.
CREATE TABLE IF NOT EXISTS {{schema}}.keys (
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  key bytea NOT NULL CHECK (octet_length(key) = 32),
  fingerprint text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Without this, ANALYZE would copy key values into pg_statistic.
ALTER TABLE {{schema}}.keys ALTER COLUMN key SET STATISTICS 0;

-- The period of each key: it pseudonymizes the rows whose timestamp lies in
-- [valid_from, valid_until), and a NULL bound is open. policy is the rotation
-- policy that created the key: none for keys made by apply and rotate-key, or
-- a period length (daily, weekly, monthly, yearly). There is no CHECK here on
-- purpose: a failed constraint prints the whole row, key included, in the
-- error and the server log.
ALTER TABLE {{schema}}.keys ADD COLUMN IF NOT EXISTS policy text NOT NULL DEFAULT 'none';

ALTER TABLE {{schema}}.keys ADD COLUMN IF NOT EXISTS valid_from timestamptz;

ALTER TABLE {{schema}}.keys ADD COLUMN IF NOT EXISTS valid_until timestamptz;

-- One key per period: concurrent first writers of a period insert with
-- ON CONFLICT DO NOTHING against this index and read back the winner.
CREATE UNIQUE INDEX IF NOT EXISTS keys_policy_valid_from ON {{schema}}.keys (policy, valid_from);

-- Periods whose keys forget-keys deleted. pseudonym() raises an error for
-- them instead of making a new key, and status lists them. Only the
-- fingerprint is kept.
CREATE TABLE IF NOT EXISTS {{schema}}.forgotten_keys (
  fingerprint text NOT NULL,
  policy text NOT NULL,
  valid_from timestamptz,
  valid_until timestamptz NOT NULL,
  created_at timestamptz NOT NULL,
  forgotten_at timestamptz NOT NULL DEFAULT now(),
  forgotten_by text NOT NULL DEFAULT session_user
);

-- The position of each table's backfill of rows stored before enforcement:
-- the primary key of the last row walked, as text in key order. Each batch
-- updates its row in the transaction that changes the rows, so an
-- interrupted backfill continues after the last committed batch. Child
-- tables have no position of their own: their rows move with their parent
-- rows, in the walk of the table named in parent_table.
CREATE TABLE IF NOT EXISTS {{schema}}.backfill_progress (
  table_schema text NOT NULL,
  table_name text NOT NULL,
  action text NOT NULL CHECK (action IN ('pseudonymize', 'purge')),
  parent_table text,
  key_columns text[] NOT NULL,
  position text[],
  rows_walked bigint NOT NULL DEFAULT 0,
  rows_changed bigint NOT NULL DEFAULT 0,
  rows_merged bigint NOT NULL DEFAULT 0,
  started_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  PRIMARY KEY (table_schema, table_name)
);

REVOKE ALL ON ALL TABLES IN SCHEMA {{schema}} FROM PUBLIC;
