PREPARE pickup(bigint[], uuid, int, int) AS
WITH mine AS (
	-- The rows still claimed under this claim, and what the claim checks
	-- before a push: the token's owner is still the recipient (a token
	-- that moved never receives the previous owner's push), the
	-- notification was not cancelled or superseded since, the type is not
	-- muted. Rows that fail a check would be closed; here they are only
	-- counted out.
	SELECT d.id, hashtextextended(d.token, 0) AS device, d.due_at,
		(t.user_id IS NOT DISTINCT FROM n.recipient AND n.cancelled_at IS NULL AND n.superseded_at IS NULL
			AND NOT coalesce(n.type = ANY (p.muted), false)) AS ok
	FROM herald_deliveries d
	JOIN herald_notifications n ON n.id = d.notification_id
	LEFT JOIN herald_device_tokens t ON t.token = d.token
	LEFT JOIN herald_preferences p ON p.user_id = t.user_id
	WHERE d.id = ANY($1) AND d.claim_id = $2 AND d.status = 'claimed'
), ranked AS (
	SELECT id, device, row_number() OVER w AS rn, count(*) OVER w_all AS n
	FROM mine WHERE ok WINDOW w AS (PARTITION BY device ORDER BY due_at, id), w_all AS (PARTITION BY device)
), rates AS (
	INSERT INTO herald_device_counts AS r (device, minute_start, minute_count, hour_start, hour_count, granted)
	SELECT device, now(), least(n, $3, $4), now(), least(n, $3, $4), least(n, $3, $4)
	FROM ranked WHERE rn = 1 ORDER BY device
	ON CONFLICT (device) DO UPDATE SET
		minute_count = r.minute_count + 1, hour_count = r.hour_count + 1, granted = 1
	RETURNING r.device, r.granted
)
SELECT (SELECT count(*) FROM mine), (SELECT count(*) FROM rates);
