-- Rewrites the key table into a new file, so that the bytes of deleted keys
-- do not stay in dead tuples or free space of the old one. It runs outside a
-- transaction block, as VACUUM must.
VACUUM FULL {{schema}}.keys;
