-- The floor of Herald's data model: the CPU one Postgres backend spends on the
-- writes every personalised delivery needs, and nothing else: its
-- notification's row, its delivery's row inserted, rewritten claimed and
-- rewritten sent, and the vacuum of the two dead versions. Set-based
-- statements of 1,000 and 500 rows, no lookups, no locks, no counts, no
-- checks. Run by run.sh; the marks are the backend's utime+stime in ticks.
\set ON_ERROR_STOP 1
\pset tuples_only on
\pset format unaligned
SELECT pg_backend_pid() \g :pidfile
SET client_min_messages = warning;
TRUNCATE herald_notifications CASCADE;
CREATE TEMP TABLE floor_ids (id uuid, rn bigint);
\! awk '{print "notifications", $14+$15}' /proc/$(cat "$FLOOR_PIDFILE")/stat
INSERT INTO herald_notifications (id, recipient, type, title, body, data, created_at)
SELECT gen_random_uuid(), 'user-' || g, 'comment', 'A new comment', 'Someone commented on your course',
	'{"course":"c-1"}', now()
FROM generate_series(1, 100000) g;
\! awk '{print "notifications", $14+$15}' /proc/$(cat "$FLOOR_PIDFILE")/stat
INSERT INTO floor_ids SELECT id, row_number() OVER () FROM herald_notifications;
CREATE INDEX ON floor_ids (rn);
ANALYZE;
CHECKPOINT;
\! awk '{print "insert", $14+$15}' /proc/$(cat "$FLOOR_PIDFILE")/stat
DO $$ BEGIN FOR b IN 0..99 LOOP
	INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
	SELECT i.id, 'tok-' || i.rn || repeat('x', 155), 'pending', now(), now(), now()
	FROM floor_ids i WHERE i.rn > b * 1000 AND i.rn <= (b + 1) * 1000;
	COMMIT;
END LOOP; END $$;
\! awk '{print "insert", $14+$15}' /proc/$(cat "$FLOOR_PIDFILE")/stat
\! awk '{print "claim", $14+$15}' /proc/$(cat "$FLOOR_PIDFILE")/stat
DO $$ DECLARE lo bigint; BEGIN SELECT min(id) INTO lo FROM herald_deliveries; FOR b IN 0..199 LOOP
	UPDATE herald_deliveries SET status = 'claimed', due_at = now() + interval '1 minute',
		claim_id = gen_random_uuid(), claimed_by = '00000000-0000-0000-0000-000000000001', updated_at = now()
	WHERE id >= lo + b * 500 AND id < lo + (b + 1) * 500;
	COMMIT;
END LOOP; END $$;
\! awk '{print "claim", $14+$15}' /proc/$(cat "$FLOOR_PIDFILE")/stat
\! awk '{print "record", $14+$15}' /proc/$(cat "$FLOOR_PIDFILE")/stat
DO $$ DECLARE lo bigint; BEGIN SELECT min(id) INTO lo FROM herald_deliveries; FOR b IN 0..199 LOOP
	UPDATE herald_deliveries SET status = 'sent', due_at = now(), claim_id = NULL, claimed_by = NULL,
		attempts = attempts + 1, message_name = 'projects/p/messages/0:1234567890', updated_at = now()
	WHERE id >= lo + b * 500 AND id < lo + (b + 1) * 500;
	COMMIT;
END LOOP; END $$;
\! awk '{print "record", $14+$15}' /proc/$(cat "$FLOOR_PIDFILE")/stat
\! awk '{print "vacuum", $14+$15}' /proc/$(cat "$FLOOR_PIDFILE")/stat
VACUUM herald_deliveries;
\! awk '{print "vacuum", $14+$15}' /proc/$(cat "$FLOOR_PIDFILE")/stat
SET client_min_messages = warning;
TRUNCATE herald_notifications CASCADE;
