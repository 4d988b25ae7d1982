ALTER TABLE herald_broadcasts DROP COLUMN refusal, DROP COLUMN refused;
