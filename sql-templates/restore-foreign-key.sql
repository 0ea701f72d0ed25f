-- NOT VALID makes this instant and checks only new rows; the tool validates
-- the key after the transaction when no pseudonymized row remains.
ALTER TABLE {{table}} DROP CONSTRAINT IF EXISTS {{constraint}};

ALTER TABLE {{table}} ADD CONSTRAINT {{constraint}}
  FOREIGN KEY ({{columns}}) REFERENCES {{referencedTable}} ({{referencedColumns}})
  {{actions}} NOT VALID;
