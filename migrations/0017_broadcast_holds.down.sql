ALTER TABLE herald_broadcasts DROP COLUMN held_at, DROP COLUMN held_mark, DROP COLUMN held_until, DROP COLUMN holds;
