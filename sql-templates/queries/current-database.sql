SELECT current_database() AS database;
