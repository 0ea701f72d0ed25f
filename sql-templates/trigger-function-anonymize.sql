-- Replaces every user identifier of a new or updated row with its pseudonym.
-- SECURITY DEFINER lets writers use the key without any privilege on it.
--
-- The function computes each pseudonym itself, with the key selection, HMAC
-- and UUID bits of pseudonym.sql, in one query per column, instead of
-- calling pseudonym(), which would call is_pseudonym() and key_id() in turn.
-- It calls pseudonym() only when that query finds no key or the row has no
-- timestamp. pseudonym() then creates the key of a new period, raises the
-- error for a forgotten period or a missing key, or returns NULL for a NULL
-- timestamp. A value that is already a pseudonym passes through.
--
-- The function has no SET search_path clause, because changing a setting
-- on every call costs each row written. It runs with the writer's
-- search_path instead, and no search_path can change what it does: every
-- table, function, operator and type in it is schema-qualified, operators
-- included (OPERATOR(pg_catalog.=) and so on), and PostgreSQL looks a
-- qualified name up in the named schema only. The temporary schema pg_temp
-- is searched first only for unqualified table and type names, and never
-- for functions or operators. The casts it uses are between built-in types,
-- and only the owner of a type may add a cast from or to it. The domain
-- label is a hex literal, so no encoding conversion, which PostgreSQL would
-- look up through the search path, takes part.
CREATE OR REPLACE FUNCTION {{function}}()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $ip_body$
DECLARE
  digest pg_catalog.bytea;
BEGIN
{{assignments}}
  RETURN NEW;
END
$ip_body$;

REVOKE ALL ON FUNCTION {{function}}() FROM PUBLIC;
