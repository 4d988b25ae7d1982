DROP INDEX herald_notifications_created_brin;
DROP TABLE herald_device_rates;
DROP FUNCTION herald_quiet_until(timestamptz, text, time, time);
ALTER TABLE herald_notifications DROP COLUMN urgent;
DROP TABLE herald_preferences;
