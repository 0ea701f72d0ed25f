-- Puts back the lock_timeout that start.sql kept.
SELECT set_config('lock_timeout', current_setting('insights_privacy.lock_timeout_before'), true);
