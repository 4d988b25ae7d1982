PREPARE pickup(bigint[], uuid, int, int) AS
WITH mine AS (
	SELECT d.id, hashtextextended(d.token, 0) AS device, d.due_at FROM herald_deliveries d
	WHERE d.id = ANY($1) AND d.claim_id = $2 AND d.status = 'claimed'
), ranked AS (
	SELECT id, device, row_number() OVER w AS rn, count(*) OVER w_all AS n
	FROM mine WINDOW w AS (PARTITION BY device ORDER BY due_at, id), w_all AS (PARTITION BY device)
), rates AS (
	INSERT INTO herald_device_counts AS r (device, minute_start, minute_count, hour_start, hour_count, granted)
	SELECT device, now(), least(n, $3, $4), now(), least(n, $3, $4), least(n, $3, $4)
	FROM ranked WHERE rn = 1 ORDER BY device
	ON CONFLICT (device) DO UPDATE SET
		minute_count = r.minute_count + 1, hour_count = r.hour_count + 1, granted = 1
	RETURNING r.device, r.granted
)
SELECT (SELECT count(*) FROM mine), (SELECT count(*) FROM rates);
