SET client_min_messages=warning;
TRUNCATE herald_deliveries, herald_notifications, herald_device_tokens, herald_device_counts CASCADE;
INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
SELECT 'tok-' || g || '-' || repeat(md5(g::text), 4), 'user-' || g, 'android', now(), now() FROM generate_series(1, 20000) g;
INSERT INTO herald_notifications (id, recipient, type, title, body, data, ttl_seconds, created_at)
SELECT gen_random_uuid(), 'user-' || g, 'comment', 'New comment', 'Someone commented on your course', '{"course":"42"}', 3600, now() + g * interval '1 microsecond'
FROM generate_series(1, 20000) g;

VACUUM ANALYZE;
