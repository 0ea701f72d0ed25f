-- Every statement of a batch starts from the batch's own rows, at most the
-- batch size, and finds every other row it needs by key. Nested loops over
-- index lookups then cost time in proportion to the batch. The planner
-- prices an index lookup far above reading a row in a scan. For a batch of
-- thousands of rows it often picks a hash or merge join that reads the
-- whole table instead, which makes every batch as slow as a scan of the
-- table. These settings last until the batch's transaction ends.
SELECT set_config('enable_hashjoin', 'off', true),
       set_config('enable_mergejoin', 'off', true),
       set_config('enable_seqscan', 'off', true);
