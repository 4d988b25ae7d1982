DROP TABLE IF EXISTS herald_broadcasts;
ALTER TABLE herald_notifications DROP COLUMN IF EXISTS audience;
