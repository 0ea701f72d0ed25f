DROP FUNCTION IF EXISTS {{function}}();
