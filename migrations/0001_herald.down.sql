DROP TABLE IF EXISTS "watermill_offsets_herald_outbox";
DROP TABLE IF EXISTS "watermill_herald_outbox";
DROP TABLE IF EXISTS herald_dead_letters;
DROP TABLE IF EXISTS herald_deliveries;
DROP TABLE IF EXISTS herald_notifications;
DROP TABLE IF EXISTS herald_device_tokens;
