ALTER TABLE {{table}} VALIDATE CONSTRAINT {{constraint}};
