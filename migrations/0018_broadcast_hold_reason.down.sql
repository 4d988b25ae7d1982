ALTER TABLE herald_broadcasts DROP COLUMN held_reason;
