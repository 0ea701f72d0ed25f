-- Parameters: $1 batch size in rows, $2 the position of the previous batch
-- (absent in a walk's first batch). Finds the next batch of a keyset walk
-- along the primary key index: its number of rows and the key of its last
-- row, as text. That key bounds the batch's statements and becomes the new
-- position.
WITH walked AS MATERIALIZED (
  SELECT {{keyColumns}}
  FROM {{table}} AS t
  WHERE {{after}}
  ORDER BY {{keyColumns}}
  LIMIT $1
)
SELECT count(*) AS rows,
       (SELECT ARRAY[{{keyText}}]
        FROM walked AS w
        ORDER BY {{lastFirst}}
        LIMIT 1) AS position
FROM walked;
