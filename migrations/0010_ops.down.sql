ALTER TABLE herald_notifications DROP COLUMN cancelled_at;
DROP TABLE herald_delivery_attempts;
