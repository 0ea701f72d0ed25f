-- The FROM clause that selects the key of a period policy (daily, weekly,
-- monthly, yearly) for a row timestamp as the key row k: the key of the
-- UTC-aligned period that contains the timestamp. The period start is
-- computed on timestamp without time zone, so that the session's TimeZone
-- setting cannot move a boundary. Schema-qualified for the reason given in
-- key-none.sql.
FROM {{schema}}.keys AS k
WHERE k.policy OPERATOR(pg_catalog.=) {{policy}}
  AND k.valid_from OPERATOR(pg_catalog.=) (pg_catalog.date_trunc({{periodUnit}}, {{rowTime}} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
