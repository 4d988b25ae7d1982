ALTER TABLE herald_notifications DROP COLUMN trace_parent;
