ALTER TABLE herald_instances DROP COLUMN dead_after_us;
