package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// deliveriesChannel is the Postgres NOTIFY channel signalled, at commit, when
// new deliveries are created, so senders wake without waiting for a poll.
const deliveriesChannel = "herald_deliveries"

// PostgresDeliveryRepository stores deliveries in herald_deliveries and
// implements app.DeliveryStore: claims are `FOR UPDATE SKIP LOCKED` with a
// lease, outcomes are written in one statement per batch.
type PostgresDeliveryRepository struct {
	db DB
	// instance is recorded as the holder of each claim (claimed_by), so
	// that the claims of an instance known to be dead come back at once
	// (PostgresFleetRepository.FreeClaimsOf). Nil records none.
	instance *[16]byte
	// limits are the per-device limits claims honour.
	limits DeviceLimits
	// lastClaimed is how many deliveries the last claim returned: the next
	// one's slice starts that large (up to its limit) rather than empty,
	// so a stream of full claims does not grow each one's slice by
	// doubling, copying every delivery about twice.
	lastClaimed atomic.Int64
}

// DeviceLimits caps the pushes claimed for one device token: at most
// PerMinute in a minute and PerHour in an hour, each window starting at the
// first push counted after the previous one ended. FCM's documented limits
// for one Android device are 240 a minute and 5,000 an hour. A limit of 0
// or less is no limit; both 0 turns the counting off. A claimed push given
// back unpushed (its lease near its end, its platform paused, a shutdown)
// still counts: the limits err on FCM's side, and it waits for its
// device's next window.
type DeviceLimits struct {
	PerMinute, PerHour int
}

// params returns the claim's $5 and $6: 0 turns the limits off.
func (l DeviceLimits) params() (perMinute, perHour int32) {
	if l.PerMinute <= 0 && l.PerHour <= 0 {
		return 0, 0
	}
	perMinute, perHour = math.MaxInt32, math.MaxInt32
	if l.PerMinute > 0 {
		perMinute = int32(min(l.PerMinute, math.MaxInt32))
	}
	if l.PerHour > 0 {
		perHour = int32(min(l.PerHour, math.MaxInt32))
	}
	return perMinute, perHour
}

// WithDeviceLimits returns a repository on the same database whose claims
// honour limits. A repository made by NewPostgresDeliveryRepository has
// none.
func (r *PostgresDeliveryRepository) WithDeviceLimits(limits DeviceLimits) *PostgresDeliveryRepository {
	return &PostgresDeliveryRepository{db: r.db, instance: r.instance, limits: limits}
}

// NewPostgresDeliveryRepository returns a repository on db.
func NewPostgresDeliveryRepository(db DB) *PostgresDeliveryRepository {
	return &PostgresDeliveryRepository{db: requireDB(db)}
}

// ForInstance returns a repository on the same database whose claims
// record instance as their holder.
func (r *PostgresDeliveryRepository) ForInstance(instance uuid.UUID) *PostgresDeliveryRepository {
	id := [16]byte(instance)
	return &PostgresDeliveryRepository{db: r.db, instance: &id, limits: r.limits}
}

// ExpandChunkSize bounds the deliveries one Expand statement creates
// directly; a recipient with more tokens than its share is continued by the
// broadcast expander (ExpandBroadcastChunk), in chunks.
const ExpandChunkSize = 5000

// minDirectPerNotification is the share of ExpandChunkSize every
// notification gets at least, however many share one call: enough for
// every ordinary user's devices, so continuations stay rare.
const minDirectPerNotification = 8

// Expand creates one pending delivery for every current token of the
// recipient of each notification, and returns how many it created. Its work
// is bounded whatever the data: it creates at most about ExpandChunkSize
// deliveries (each notification gets an equal share, at least 8), and for a
// recipient with more tokens than its share it records a continuation in
// herald_broadcasts (with the recipient set and the cursor at the last token
// expanded), which ExpandBroadcastChunk then carries on in chunks. For a
// broadcast notification it records the broadcast. Tokens longer than
// notification.MaxTokenLength, and the empty token (which Register refuses,
// but someone may have written into the table), are skipped. It is idempotent: a (notification,
// token) pair that already has a delivery, or a notification that already
// has its row in herald_broadcasts, is skipped. Deliveries are due at the
// database's clock, or at the notification's send time if later.
//
// Collapse: for each recipient and collapse key among the notifications,
// every notification of that key but the newest (by creation time, then id)
// gets superseded_at: those given, and the oldest others up to each one's
// share (a burst of thousands raised before the relay reached the first is
// superseded by their own expansions, never all in one statement). The claim closes their open deliveries as superseded
// as they come due (a column test), never returning them; a delivery
// claimed at that moment is on its way and left to its sender, and if its
// push does not happen it comes back and the next claim closes it. Those of
// a personal notification held more than 30 s ahead are closed here at
// once (up to ExpandChunkSize per call; any more come due and are closed by
// the claim then), so they do not stay open until their time. When it
// creates anything it signals deliveriesChannel,
// which Postgres delivers at commit. The relay makes the repository on its
// transaction.
func (r *PostgresDeliveryRepository) Expand(ctx context.Context, notificationIDs []uuid.UUID) (int, error) {
	if len(notificationIDs) == 0 {
		return 0, nil
	}
	share := max(ExpandChunkSize/len(notificationIDs), minDirectPerNotification)
	var created int
	var notified any
	// No plan_cache_mode tweak (it was SET LOCAL, which logs a warning
	// outside a transaction block): measured on this statement, one
	// notification per call, 3,000 calls, 4 runs each, begin + Expand +
	// rollback took 200-273 us with the default and 207-273 us with
	// force_generic_plan; after five executions Postgres keeps the generic
	// plan by itself.
	//
	// The token filters repeat the predicate of the partial index
	// herald_device_tokens_user_token_idx literally, so the planner uses it:
	// each recipient's tokens are read in order and the scan stops at its
	// share.
	err := r.db.QueryRow(ctx, `
		WITH ns AS MATERIALIZED (
			-- The notifications, read once for every part below.
			SELECT id, recipient, type, urgent, audience, send_at, collapse_key, cancelled_at, created_at
			FROM herald_notifications WHERE id = ANY($1::uuid[])
		), picked AS (
			SELECT n.id AS notification_id, n.recipient, t.token, t.rn,
				coalesce(n.type = ANY (p.muted), false) AS muted,
				-- A scheduled notification is due at its send time; the
				-- recipient's quiet hours may hold it longer.
				greatest(now(), n.send_at) AS send_at,
				CASE WHEN p.quiet_start IS NULL OR n.urgent THEN greatest(now(), n.send_at)
					ELSE herald_quiet_until(greatest(now(), n.send_at), p.time_zone, p.quiet_start, p.quiet_end)
				END AS push_at
			FROM ns n
			LEFT JOIN herald_preferences p ON p.user_id = n.recipient
			CROSS JOIN LATERAL (
				SELECT t.token, row_number() OVER (ORDER BY t.token) AS rn
				FROM herald_device_tokens t
				WHERE t.user_id = n.recipient
					AND octet_length(t.token) <= 1024 AND octet_length(t.user_id) <= 1024
					-- Never an empty token (as broadcasts, whose cursor starts at '').
					AND t.token > ''
				ORDER BY t.token
				LIMIT $2 + 1
			) t
			WHERE n.audience IS NULL AND n.cancelled_at IS NULL
		), created AS (
			-- The recipient's preferences, read now and again at the claim:
			-- a muted type ends muted here, quiet hours set the due time.
			INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at,
				error_code, last_error)
			SELECT notification_id, token, CASE WHEN muted THEN 'muted' ELSE 'pending' END, push_at, now(), now(),
				CASE WHEN muted THEN 'MUTED' WHEN push_at > send_at THEN 'QUIET_HOURS' ELSE '' END,
				CASE WHEN muted THEN 'type muted by the recipient'
					WHEN push_at > send_at THEN 'waiting for the recipient''s quiet hours to end' ELSE '' END
			FROM picked WHERE rn <= $2
			ON CONFLICT (notification_id, token) DO NOTHING
			RETURNING 1
		), newest AS (
			-- The newest notification (by creation, then id) of each
			-- recipient's collapse key among these: one index probe per key;
			-- nothing for notifications without a key.
			SELECT g.recipient, g.collapse_key, m.created_at, m.id
			FROM (SELECT DISTINCT recipient, collapse_key FROM ns WHERE collapse_key IS NOT NULL) g,
			LATERAL (SELECT m.created_at, m.id FROM herald_notifications m
				WHERE m.recipient = g.recipient AND m.collapse_key = g.collapse_key
				ORDER BY m.created_at DESC, m.id DESC LIMIT 1) m
		), stale AS (
			-- Collapse: every older notification of the key is superseded,
			-- wherever it stands in expansion, a bounded number per
			-- statement: these notifications themselves, and the oldest $2
			-- others of each key. A burst raised faster than the relay
			-- expands (or while it was down) holds thousands of them;
			-- superseding all at once outlasted the relay's ack deadline.
			-- The rest are superseded by their own expansions.
			SELECT n.id FROM ns n JOIN newest w ON w.recipient = n.recipient AND w.collapse_key = n.collapse_key
			WHERE (n.created_at, n.id) < (w.created_at, w.id)
			UNION
			SELECT o.id FROM newest w, LATERAL (SELECT o.id FROM herald_notifications o
				WHERE o.recipient = w.recipient AND o.collapse_key = w.collapse_key AND o.superseded_at IS NULL
					AND (o.created_at, o.id) < (w.created_at, w.id)
				ORDER BY o.created_at, o.id LIMIT $2) o
		), collapsed AS (
			-- Their deliveries are closed by the claim, which reads
			-- superseded_at: updating them here, in the relay's REPEATABLE
			-- READ transaction, would fail on every delivery a sender
			-- claimed meanwhile.
			UPDATE herald_notifications o SET superseded_at = now()
			FROM stale s WHERE o.id = s.id AND o.superseded_at IS NULL
			RETURNING o.id, o.audience IS NULL AS personal
		), held AS (
			-- Their deliveries held far ahead (by a SendAt, quiet hours or a
			-- long backoff) end now rather than stay open until then. A claim
			-- only ever changes due rows, so these cannot have changed under
			-- the relay's snapshot; those due within 30 s are left to the
			-- claim. A broadcast's may be millions: left to the claim too,
			-- and so are those of a recipient with many devices beyond the
			-- first ExpandChunkSize ($4): closing half a million in one
			-- statement outlasted the relay's ack deadline.
			UPDATE herald_deliveries d SET status = 'superseded', due_at = now(), updated_at = now(),
				claim_id = NULL, error_code = 'SUPERSEDED',
				last_error = 'replaced by a newer notification with the same collapse key before the push'
			WHERE d.id IN (
				SELECT h.id FROM collapsed c JOIN herald_deliveries h ON h.notification_id = c.id
				WHERE c.personal AND h.status IN ('pending', 'retry_scheduled')
					AND h.due_at > now() + interval '30 seconds'
				LIMIT $4)
		), continued AS (
			-- The recipient has more tokens than this share: the broadcast
			-- expander carries on after the last one expanded here.
			INSERT INTO herald_broadcasts (notification_id, recipient, last_token, expanded, created_at)
			SELECT p.notification_id, p.recipient, p.token, $2, now() FROM picked p
			WHERE p.rn = $2 AND EXISTS (
				SELECT 1 FROM picked q WHERE q.notification_id = p.notification_id AND q.rn = $2 + 1)
			ON CONFLICT (notification_id) DO NOTHING
			RETURNING 1
		), broadcasts AS (
			INSERT INTO herald_broadcasts (notification_id, platforms, created_at)
			SELECT n.id, ARRAY(SELECT jsonb_array_elements_text(coalesce(n.audience->'platforms', '[]'))), now()
			FROM ns n
			WHERE n.audience IS NOT NULL AND n.cancelled_at IS NULL
			ON CONFLICT (notification_id) DO NOTHING
			RETURNING 1
		), counts AS (
			SELECT (SELECT count(*) FROM created) AS created,
				(SELECT count(*) FROM continued) + (SELECT count(*) FROM broadcasts) AS broadcasts
		)
		-- The signal is delivered at commit, and only if something was created.
		SELECT created, CASE WHEN created + broadcasts > 0 THEN pg_notify($3, '') END FROM counts`,
		uuidArray(notificationIDs), share, deliveriesChannel, ExpandChunkSize).Scan(&created, &notified)
	if err != nil {
		return 0, fmt.Errorf("expand notifications into deliveries: %w", err)
	}
	return created, nil
}

// ExpandBroadcastChunk creates the deliveries of the next chunk of at most
// limit tokens of one unfinished broadcast or continuation (continuations
// first, since each is one person's devices and must not wait behind a
// campaign to millions; then the oldest; never one being expanded by
// someone else), in one statement, and advances its
// cursor; a continuation (see Expand) covers only its recipient's tokens.
// It reports how many deliveries it created and which broadcast it found,
// if any. A broadcast is finished when a chunk comes back short. Tokens
// registered after the cursor passed them are not included, nor tokens
// longer than notification.MaxTokenLength. Deliveries are due at the
// database's clock; when it creates any, the same statement signals
// deliveriesChannel, delivered at commit.
//
// When the statement fails for a reason that is not transient (a host's
// trigger, CHECK or foreign key on herald_deliveries refusing one token's
// delivery fails it whole, at every try, and with it every broadcast queued
// behind), the chunk is expanded again, at most isolatedChunkSize tokens,
// in one transaction that isolates the refused deliveries under savepoints
// (expandIsolating): every other token gets its delivery, and the refused
// ones are counted in herald_broadcasts.refused with the last one's reason
// in refusal. A chunk every delivery of which is refused is held instead
// (see expandIsolating). Run on a caller's transaction, the failed
// statement has aborted it, and the error is returned.
func (r *PostgresDeliveryRepository) ExpandBroadcastChunk(ctx context.Context, limit int) (app.BroadcastChunk, error) {
	var notified any
	var chunk app.BroadcastChunk
	var id *uuid.UUID
	err := r.db.QueryRow(ctx, broadcastChunkSQL+`, created AS (
			INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
			SELECT notification_id, token, 'pending', greatest(now(), send_at), now(), now() FROM chunk
			ON CONFLICT (notification_id, token) DO NOTHING
			RETURNING 1
		), advanced AS (
			UPDATE herald_broadcasts hb SET
				last_token = coalesce((SELECT max(token) FROM chunk), hb.last_token),
				-- Saturating: a count near the end of bigint, written around
				-- Herald, failed every chunk of this oldest broadcast and so
				-- held every broadcast behind it.
				expanded = least(hb.expanded::numeric + (SELECT count(*) FROM chunk), 9223372036854775807)::bigint,
				finished_at = CASE WHEN (SELECT count(*) FROM chunk) < $1 OR b.cancelled THEN now() END,
				`+clearHoldSQL+`
			FROM b WHERE hb.notification_id = b.notification_id
			RETURNING hb.notification_id
		), counts AS (
			SELECT (SELECT count(*) FROM created) AS created, (SELECT notification_id FROM advanced) AS found
		)
		-- The signal is delivered at commit, and only if something was created.
		SELECT created, found, CASE WHEN created > 0 THEN pg_notify($2, '') END FROM counts`,
		limit, deliveriesChannel).Scan(&chunk.Created, &id, &notified)
	if err == nil && id != nil {
		chunk.Found, chunk.NotificationID = true, *id
	}
	if err != nil && !IsTransient(err) {
		chunk, err = r.expandIsolating(ctx, min(limit, isolatedChunkSize))
	}
	if err != nil {
		return app.BroadcastChunk{}, fmt.Errorf("expand broadcast chunk: %w", err)
	}
	return chunk, nil
}

// broadcastChunkSQL picks the broadcast ExpandBroadcastChunk works on (b,
// locked) and the next chunk of at most $1 of its tokens (chunk).
const broadcastChunkSQL = `
		WITH b AS (
			-- A cancelled notification's broadcast is finished without a
			-- delivery: the cancel finishes the rows it sees, and the relay
			-- may commit this one after it (its transaction read the
			-- notification before the cancel).
			SELECT hb.notification_id, hb.recipient, hb.platforms, hb.last_token,
				EXISTS (SELECT 1 FROM herald_notifications n
					WHERE n.id = hb.notification_id AND n.cancelled_at IS NOT NULL) AS cancelled,
				hb.held_at, hb.held_mark, hb.holds
			FROM herald_broadcasts hb
			WHERE hb.finished_at IS NULL
				-- A held broadcast (see expandIsolating) steps aside until
				-- its hold ends; one held further ahead than Herald ever
				-- holds was written around Herald and is not held.
				AND (hb.held_until IS NULL OR hb.held_until <= now() OR hb.held_until > now() + ` + holdAheadLimitSQL + `)
			ORDER BY hb.recipient IS NULL, hb.created_at LIMIT 1
			FOR UPDATE SKIP LOCKED
		), chunk AS (
			SELECT b.notification_id, t.token, (SELECT n.send_at FROM herald_notifications n
				WHERE n.id = b.notification_id) AS send_at
			FROM b, LATERAL (
				(SELECT t.token FROM herald_device_tokens t
				WHERE b.recipient IS NULL AND t.token > b.last_token AND octet_length(t.token) <= 1024
					AND (cardinality(b.platforms) = 0 OR t.platform = ANY (b.platforms))
				ORDER BY t.token LIMIT $1)
				UNION ALL
				(SELECT t.token FROM herald_device_tokens t
				WHERE t.user_id = b.recipient AND t.token > b.last_token
					AND octet_length(t.token) <= 1024 AND octet_length(t.user_id) <= 1024
					AND (cardinality(b.platforms) = 0 OR t.platform = ANY (b.platforms))
				ORDER BY t.token LIMIT $1)
			) t
			WHERE NOT b.cancelled
		)`

func (r *PostgresDeliveryRepository) signal(ctx context.Context) error {
	if _, err := r.db.Exec(ctx, `SELECT pg_notify($1, '')`, deliveriesChannel); err != nil {
		return fmt.Errorf("signal new deliveries: %w", err)
	}
	return nil
}

// ClaimDue implements app.DeliveryStore: one statement leases up to limit
// due deliveries (oldest due first) and returns them with their messages.
//
// The database's clock decides what is due and when a lease ends, so
// servers whose clocks disagree never take over each other's live leases.
// now is only the caller's clock at the claim: the returned deliveries' due
// times (their lease ends) are now+lease, so the caller measures what is
// left of a lease with its own clock.
//
// A delivery is claimed only if its token still belongs to its
// notification's recipient (for a broadcast: still exists and matches the
// broadcast's platforms). One whose token left the registry is closed
// token_pruned (TOKEN_REMOVED); one whose token now belongs to someone else
// is closed token_moved (TOKEN_MOVED); one whose notification an operator
// cancelled is closed cancelled (CANCELLED); one whose notification a newer
// one with the same collapse key superseded (superseded_at set at
// expansion) is closed superseded (SUPERSEDED), and one whose
// notification's expiry has passed is closed expired (EXPIRED): each a
// column test on the joined notification. None is returned; since closed
// deliveries take up room in a claim, it claims again for the room they
// took, so a claim that returns fewer than limit means nothing more is due.
func (r *PostgresDeliveryRepository) ClaimDue(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]app.Dispatch, error) {
	var dispatches []app.Dispatch
	for len(dispatches) < limit {
		room := limit - len(dispatches)
		claimed, scanned, err := r.claimOnce(ctx, now, room, lease)
		if err != nil {
			if len(dispatches) > 0 {
				return dispatches, nil // those are claimed: push them; the next claim retries
			}
			return nil, err
		}
		if dispatches == nil {
			dispatches = claimed // the usual single claim: no copy
		} else {
			dispatches = append(dispatches, claimed...)
		}
		if scanned < room || len(claimed) == scanned {
			break // nothing more due, or nothing closed: the room is used
		}
	}
	return dispatches, nil
}

// claimSQL claims up to $1 due deliveries for $2 microseconds under claim
// $3 for instance $4, honouring per-device limits of $5 a minute and $6 an
// hour ($5 = 0: none). Each grant is built once per claim (grants is
// MATERIALIZED): inlined, the planner could put its aggregate on the inner
// side of a nested loop and build it again for every row. Measured on a
// table analysed while empty: 245 ms for a claim of 500 instead of 13.
const claimSQL = `		WITH locked AS (
			-- Lock first, join after: rows that other senders hold are
			-- skipped for the price of an index entry and a lock attempt.
			-- Joining before locking read each skipped row's notification,
			-- token and preferences too: with three senders a claim skips
			-- about as many rows as it takes, and that doubled its cost.
			SELECT d.id, d.notification_id, d.token, d.due_at
			FROM herald_deliveries d
			WHERE d.status IN ('pending', 'retry_scheduled', 'claimed') AND d.due_at <= now()
			ORDER BY d.due_at
			LIMIT $1
			FOR UPDATE SKIP LOCKED
		), due AS (
			SELECT d.id, d.token, hashtextextended(d.token, 0) AS device, d.due_at, t.platform, n.title, n.body, n.data, n.ttl_seconds, n.expires_at,
				n.collapse_key, n.options, n.trace_parent, n.send_at,
				-- The unread count only for the few notifications whose
				-- options ask for it as their badge.
				-- Compared as JSON, not cast: a cast fails the whole claim
				-- on one row that holds anything but a boolean.
				CASE WHEN n.options IS NULL THEN NULL
					WHEN n.options->'apns'->'badge_unread' = 'true' OR n.options->'android'->'badge_unread' = 'true'
					THEN (SELECT count(*) FROM herald_notifications u WHERE u.recipient = n.recipient
						AND u.read_at IS NULL AND (u.send_at IS NULL OR u.send_at <= now()) AND u.superseded_at IS NULL)
				END AS badge,
				CASE
					WHEN n.cancelled_at IS NOT NULL THEN 'cancelled'
					WHEN t.token IS NULL THEN 'token_pruned'
					-- A newer notification with the same collapse key was
					-- expanded, or the expiry passed: never pushed.
					WHEN n.superseded_at IS NOT NULL THEN 'superseded'
					WHEN n.expires_at <= now() THEN 'expired'
					WHEN NOT (n.audience IS NULL AND t.user_id = n.recipient
						OR n.audience IS NOT NULL AND (coalesce(n.audience->'platforms', '[]') IN ('[]', 'null')
							OR n.audience->'platforms' ? t.platform)) THEN 'token_moved'
					-- The token's owner's preferences: one probe of a small
					-- table's primary key, a miss for users who have none.
					WHEN p.user_id IS NULL THEN 'claimed'
					WHEN n.type = ANY (p.muted) THEN 'muted'
					WHEN p.quiet_start IS NOT NULL AND NOT n.urgent
						AND herald_quiet_until(now(), p.time_zone, p.quiet_start, p.quiet_end) > now() THEN 'quiet'
					ELSE 'claimed'
				END AS next,
				CASE WHEN p.quiet_start IS NOT NULL AND NOT n.urgent
					THEN herald_quiet_until(now(), p.time_zone, p.quiet_start, p.quiet_end) END AS quiet_until
			FROM locked d
			JOIN herald_notifications n ON n.id = d.notification_id
			LEFT JOIN herald_device_tokens t ON t.token = d.token
			LEFT JOIN herald_preferences p ON p.user_id = t.user_id
		), ranked AS (
			-- Per-device limits ($5 a minute, $6 an hour; off when $5 is 0):
			-- each device's pushes in this claim, oldest first. A device
			-- is its token's 64-bit hash (migration 0013): 8-byte keys
			-- sort, lock and index for less than 160-byte tokens, and two
			-- tokens that collide only share one limit.
			SELECT id, device, row_number() OVER w AS rn, count(*) OVER w_all AS n
			FROM due WHERE next = 'claimed' AND $5::int > 0
			WINDOW w AS (PARTITION BY device ORDER BY due_at, id),
				w_all AS (PARTITION BY device)
		), rates AS (
			-- One upsert per device, in device order (so concurrent claims
			-- never deadlock), grants what is left of its windows; the row
			-- lock makes concurrent claims for one device take turns.
			INSERT INTO herald_device_counts AS r (device, minute_start, minute_count, hour_start, hour_count, granted)
			SELECT device, now(), least(n, $5, $6), now(), least(n, $5, $6), least(n, $5, $6)
			FROM ranked WHERE rn = 1 ORDER BY device
			ON CONFLICT (device) DO UPDATE SET
				minute_start = CASE WHEN r.minute_start > now() - interval '1 minute' THEN r.minute_start ELSE now() END,
				hour_start = CASE WHEN r.hour_start > now() - interval '1 hour' THEN r.hour_start ELSE now() END,
				granted = greatest(0, least(excluded.granted,
					$5 - CASE WHEN r.minute_start > now() - interval '1 minute' THEN r.minute_count ELSE 0 END,
					$6 - CASE WHEN r.hour_start > now() - interval '1 hour' THEN r.hour_count ELSE 0 END)),
				minute_count = CASE WHEN r.minute_start > now() - interval '1 minute' THEN r.minute_count ELSE 0 END
					+ greatest(0, least(excluded.granted,
						$5 - CASE WHEN r.minute_start > now() - interval '1 minute' THEN r.minute_count ELSE 0 END,
						$6 - CASE WHEN r.hour_start > now() - interval '1 hour' THEN r.hour_count ELSE 0 END)),
				hour_count = CASE WHEN r.hour_start > now() - interval '1 hour' THEN r.hour_count ELSE 0 END
					+ greatest(0, least(excluded.granted,
						$5 - CASE WHEN r.minute_start > now() - interval '1 minute' THEN r.minute_count ELSE 0 END,
						$6 - CASE WHEN r.hour_start > now() - interval '1 hour' THEN r.hour_count ELSE 0 END))
			RETURNING r.device, r.granted, r.minute_start, r.hour_start, r.hour_count
		), grants AS MATERIALIZED (
			-- Each device's grant, and when its window ends, as one value
			-- looked up by device below. Joining the CTEs row to row instead
			-- made Postgres pick nested loops (it cannot estimate a CTE's
			-- rows, and guesses one): 250,000 token comparisons per join for
			-- a claim of 500, measured at 70-90 % of the whole claim.
			SELECT coalesce(jsonb_object_agg(device::text, jsonb_build_array(granted, extract(epoch FROM
				CASE WHEN hour_count >= $6 THEN hour_start + interval '1 hour'
					ELSE minute_start + interval '1 minute' END))), '{}') AS g
			FROM rates
		), decided AS (
			-- A device over its limit waits for its window to end (the
			-- excess spread over the following minutes); nothing is dropped.
			SELECT due.*, CASE WHEN due.next = 'claimed' AND due.rn > (grants.g->(due.device::text)->>0)::int THEN 'throttled'
					ELSE due.next END AS outcome,
				to_timestamp((grants.g->(due.device::text)->>1)::float8)
					+ ((due.rn - (grants.g->(due.device::text)->>0)::int - 1) / $5) * interval '1 minute' AS free_at
			FROM (SELECT due.*, row_number() OVER (PARTITION BY device, next = 'claimed'
				ORDER BY due_at, id) AS rn FROM due) due, grants
		)
		-- A delivery whose token left the registry since it was created (the
		-- user signed out, or the token was pruned), or now belongs to
		-- another user, is closed, not pushed; so is one of a type its
		-- recipient muted. One in its recipient's quiet hours, or to a
		-- device over its limits, is given back, due when it may go.
		UPDATE herald_deliveries d SET
			status = CASE WHEN f.outcome IN ('quiet', 'throttled')
				THEN CASE WHEN d.attempts = 0 THEN 'pending' ELSE 'retry_scheduled' END ELSE f.outcome END,
			due_at = CASE f.outcome WHEN 'claimed' THEN now() + $2::bigint * interval '1 microsecond'
				WHEN 'quiet' THEN f.quiet_until WHEN 'throttled' THEN f.free_at ELSE now() END,
			updated_at = now(),
			claim_id = CASE WHEN f.outcome = 'claimed' THEN $3::uuid END,
			claimed_by = CASE WHEN f.outcome = 'claimed' THEN $4::uuid END,
			error_code = CASE f.outcome
				WHEN 'claimed' THEN CASE WHEN d.error_code IN ('QUIET_HOURS', 'DEVICE_RATE') THEN '' ELSE d.error_code END
				WHEN 'token_pruned' THEN 'TOKEN_REMOVED' WHEN 'token_moved' THEN 'TOKEN_MOVED'
				WHEN 'cancelled' THEN 'CANCELLED' WHEN 'superseded' THEN 'SUPERSEDED' WHEN 'expired' THEN 'EXPIRED'
				WHEN 'muted' THEN 'MUTED' WHEN 'quiet' THEN 'QUIET_HOURS' ELSE 'DEVICE_RATE' END,
			last_error = CASE f.outcome
				WHEN 'claimed' THEN CASE WHEN d.error_code IN ('QUIET_HOURS', 'DEVICE_RATE') THEN '' ELSE d.last_error END
				WHEN 'token_pruned' THEN 'token removed from the registry before the push'
				WHEN 'token_moved' THEN 'token registered to another user before the push'
				WHEN 'cancelled' THEN 'cancelled by an operator'
				WHEN 'superseded' THEN 'replaced by a newer notification with the same collapse key before the push'
				WHEN 'expired' THEN 'notification expired before the push'
				WHEN 'muted' THEN 'type muted by the recipient'
				WHEN 'quiet' THEN 'waiting for the recipient''s quiet hours to end'
				ELSE 'device over its per-device limit: waiting for its window to end' END
		FROM decided f
		WHERE d.id = f.id
		-- An infinite expiry or send time (written by hand: Raise never
		-- writes one) is read as none: Go's time.Time cannot hold it, and
		-- subtracting it fails; either failed the whole claim. Minus
		-- infinity expired above.
		RETURNING d.status = 'claimed', d.id, d.notification_id, d.token, coalesce(f.platform, ''), d.attempts,
			d.last_error, d.error_code, f.title, f.body, f.data, f.ttl_seconds,
			CASE WHEN isfinite(f.expires_at) THEN f.expires_at END, coalesce(f.collapse_key, ''), f.options, f.badge,
			f.trace_parent, CASE WHEN isfinite(f.send_at) THEN f.send_at END,
			CASE WHEN isfinite(f.expires_at) THEN (extract(epoch FROM f.expires_at - now()) * 1e6)::bigint END`

// claimOnce is one claim statement for up to limit due deliveries; it
// returns the claimed ones and how many it took in all (closed included).
func (r *PostgresDeliveryRepository) claimOnce(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]app.Dispatch, int, error) {
	claimID := uuid.New()
	// The only good plan walks the partial index on due_at in order and
	// stops at the limit. Right after a bulk insert, before autovacuum has
	// analysed the table, the planner believes it holds a few rows and
	// sorts the whole backlog instead: measured 20-45 ms a claim instead of
	// 2-4 ms, and a run four times slower. The settings are local to the
	// batch's one transaction (it ends at the batch's single Sync), and
	// set_config, unlike SET LOCAL, does not make Postgres log a warning
	// when that transaction is not an explicit block.
	batch := &pgx.Batch{}
	batch.Queue(`SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)`)
	var dispatches []app.Dispatch
	if n := min(limit, int(r.lastClaimed.Load())); n > 0 {
		dispatches = make([]app.Dispatch, 0, n)
	}
	var scanned int
	var malformed []malformedClaim
	perMinute, perHour := r.limits.params()
	batch.Queue(claimSQL,
		limit, lease.Microseconds(), [16]byte(claimID), r.instance, perMinute, perHour).Query(func(rows pgx.Rows) error {
		var err error
		scanned, malformed, err = scanClaims(rows, now, lease, claimID, &dispatches)
		return err
	})
	if err := r.db.SendBatch(ctx, batch).Close(); err != nil {
		return nil, 0, fmt.Errorf("claim due deliveries: %w", err)
	}
	if len(malformed) > 0 {
		// Should this fail, they stay claimed: their lease ends, and the
		// claim that takes them again fails them then.
		_ = r.failMalformed(ctx, claimID, malformed)
	}
	r.lastClaimed.Store(int64(len(dispatches)))
	return dispatches, scanned, nil
}

// malformedClaim is a claimed delivery whose notification's row does not
// decode (written around Raise), and why.
type malformedClaim struct {
	id     int64
	reason string
}

// failMalformed fails, for good, the deliveries of claim claimID whose
// notification's row does not decode: no push can be made of it, and a
// claim that failed on it would have stopped every other delivery's.
func (r *PostgresDeliveryRepository) failMalformed(ctx context.Context, claimID uuid.UUID, malformed []malformedClaim) error {
	ids := make([]int64, len(malformed))
	reasons := make([]string, len(malformed))
	for i, m := range malformed {
		ids[i], reasons[i] = m.id, storableText(m.reason) // it may quote the row's bytes
	}
	_, err := r.db.Exec(ctx, `
		UPDATE herald_deliveries d SET status = 'failed', error_code = 'MALFORMED_NOTIFICATION', last_error = u.reason,
			due_at = now(), updated_at = now(), claim_id = NULL, claimed_by = NULL
		FROM unnest($1::bigint[], $2::text[]) AS u(id, reason)
		WHERE d.id = u.id AND d.claim_id = $3 AND d.status = 'claimed'`, ids, reasons, [16]byte(claimID))
	if err != nil {
		return fmt.Errorf("fail deliveries of malformed notifications: %w", err)
	}
	return nil
}

// scanClaims reads ClaimDue's rows into dispatches, expressing each lease
// end in the caller's clock (now+lease).
//
// The data and options columns are read as raw JSON and decoded here: a
// row written around Raise whose JSON does not fit (data that is not an
// object of strings, options of the wrong types) is returned in malformed,
// to be failed, instead of failing the reading of the whole claim.
func scanClaims(rows pgx.Rows, now time.Time, lease time.Duration, claimID uuid.UUID, dispatches *[]app.Dispatch) (scanned int, malformed []malformedClaim, err error) {
	defer rows.Close()
	// The targets, and the list Scan takes, are made once per claim: made
	// per row, each escaped to the heap, half of a claim's allocations.
	// The notification id is scanned as 16 bytes, not through uuid.UUID's
	// sql.Scanner, which goes by way of its text.
	var (
		claimed                                       bool
		id                                            int64
		notificationID                                uuid.UUID
		token, platform, lastError, code, title, body string
		attempts                                      int
		rawData, rawOptions                           rawJSON
		data                                          map[string]string // decoded from rawData
		options                                       *storedOptions    // decoded from rawOptions
		ttl                                           int32
		expiresAt                                     *time.Time
		collapseKey                                   string
		badge                                         *int64
		traceParent                                   *string
		sendAt                                        *time.Time
		expiresInUS                                   *int64
	)
	targets := []any{&claimed, &id, (*[16]byte)(&notificationID), &token, &platform, &attempts, &lastError, &code,
		&title, &body, &rawData, &ttl, &expiresAt, &collapseKey, &rawOptions, &badge, &traceParent, &sendAt, &expiresInUS}
	for rows.Next() {
		scanned++
		// The previous row's message keeps its map and pointers: no
		// decoder may fill them in again.
		expiresAt, badge, traceParent, sendAt, expiresInUS = nil, nil, nil, nil, nil
		if err := rows.Scan(targets...); err != nil {
			return scanned, malformed, err
		}
		if !claimed {
			continue
		}
		data, options = nil, nil
		if rawData.valid {
			if err := json.Unmarshal(rawData.b, &data); err != nil {
				malformed = append(malformed, malformedClaim{id, "notification data is not a JSON object of strings: " + err.Error()})
				continue
			}
		}
		if rawOptions.valid {
			if err := json.Unmarshal(rawOptions.b, &options); err != nil {
				malformed = append(malformed, malformedClaim{id, "notification options do not decode: " + err.Error()})
				continue
			}
		}
		d := notification.DeliveryFromDatabase(id, notificationID, token, notification.StatusClaimed, attempts,
			now.Add(lease), claimID, lastError, code, "", now)
		msg := notification.Message{NotificationID: notificationID, Token: token,
			Platform: notification.Platform(platform), Content: notification.Content{
				Title: title, Body: body, Data: data, TTL: time.Duration(ttl) * time.Second,
			}, PushOptions: notification.PushOptions{CollapseKey: collapseKey, ExpiresAt: deref(expiresAt)}}
		if options != nil {
			msg.Android, msg.APNs, msg.Web = options.Android, options.APNs, options.Web
		}
		if badge != nil {
			msg.Badge = ptr(int(*badge))
		}
		dispatch := app.Dispatch{Delivery: d, Message: msg, SendAt: deref(sendAt)}
		if traceParent != nil {
			dispatch.TraceParent = *traceParent
		}
		if us := expiresInUS; us != nil && *us < math.MaxInt64/int64(time.Microsecond) {
			// What remained by the database's clock, from the caller's now.
			// More than a time.Duration holds (292 years; Raise takes an
			// expiry up to the year 9999) would wrap around to the past:
			// left zero, the message's own ExpiresAt is used, which no
			// clock skew brings near.
			dispatch.ExpiresAt = now.Add(time.Duration(*us) * time.Microsecond)
		}
		*dispatches = append(*dispatches, dispatch)
	}
	return scanned, malformed, rows.Err()
}

// rawJSON is a json or jsonb column's text (valid false for NULL), read into
// a buffer reused from row to row (pgtype.BytesScanner): a []byte target
// took a copy of each.
type rawJSON struct {
	b     []byte
	valid bool
}

// ScanBytes implements pgtype.BytesScanner.
func (r *rawJSON) ScanBytes(v []byte) error {
	r.valid = v != nil
	r.b = append(r.b[:0], v...)
	return nil
}

// StillClaimed implements app.DeliveryStore: the delivery is still claimed
// under d's claim and its lease has not ended (by the database's clock).
// Registering its token to another user, unregistering it, another sender
// taking over an expired lease, or the fleet freeing the claims of an
// instance it took for dead all clear that claim. A claim whose
// notification was superseded (a newer one with its collapse key was
// expanded) or cancelled since is no longer current either: it is not
// pushed, and the first claim after its lease closes it.
//
// The token must also still be the recipient's (for a broadcast: still
// registered, on one of its platforms), as the claim required: a
// registration or an unregistration closes the open deliveries it sees at
// its start, and one the relay committed while that statement ran, claimed
// before the move committed, escapes it and stays claimed.
func (r *PostgresDeliveryRepository) StillClaimed(ctx context.Context, d *notification.Delivery) (bool, error) {
	var current bool
	err := r.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM herald_deliveries d
		JOIN herald_notifications n ON n.id = d.notification_id
		JOIN herald_device_tokens t ON t.token = d.token
		WHERE d.id = $1 AND d.claim_id = $2 AND d.status = 'claimed' AND d.due_at > now()
			AND n.superseded_at IS NULL AND n.cancelled_at IS NULL
			AND (n.audience IS NULL AND t.user_id = n.recipient
				OR n.audience IS NOT NULL AND (coalesce(n.audience->'platforms', '[]') IN ('[]', 'null')
					OR n.audience->'platforms' ? t.platform)))`, d.ID(), [16]byte(d.ClaimID())).Scan(&current)
	if err != nil {
		return false, fmt.Errorf("check delivery claim: %w", err)
	}
	return current, nil
}

// recordSQL records a batch of outcomes ($1-$8, one element per delivery),
// each only if its claim ($8) is still current, logs failed attempts, and
// for the tokens found dead ($10, locked first) deletes them (only when $9)
// and closes their other open deliveries.
const recordSQL = `
		WITH outcome AS (
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[],
				$6::text[], $7::text[], $8::uuid[])
				AS u(id, status, attempts, delay_us, last_error, error_code, message_name, claim_id)
` + recordSteps + recordEnd

// recordGivingBackSQL is recordSQL for a batch with pushes given back
// unpushed ($11, one flag per delivery) while per-device limits are on:
// what their claims counted against their devices' limits is given back
// too. The usual batch, with none, runs recordSQL and pays nothing for it.
const recordGivingBackSQL = `
		WITH outcome AS (
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::text[],
				$6::text[], $7::text[], $8::uuid[], $11::bool[])
				AS u(id, status, attempts, delay_us, last_error, error_code, message_name, claim_id, unpushed)
` + recordSteps + recordGiveBack + recordEnd

// recordSteps are recordSQL's steps after its outcomes; batch reads each
// row's updated_at and due_at for recordGiveBack.
const recordSteps = `		), dying AS (
			-- The tokens found dead ($10), locked first and in byte order:
			-- tokens before deliveries (the lock order, see the package
			-- documentation). Locked after the deliveries, a registration,
			-- an unregistration or an erasure of the same tokens, which
			-- lock them first, deadlocked with this statement.
			SELECT token FROM herald_device_tokens WHERE token = ANY ($10::text[])
			ORDER BY token COLLATE "C" FOR UPDATE
		), batch AS (
			-- Then the batch's deliveries, in id order: an import moving
			-- tokens locks the deliveries it closes in id order too; each
			-- in its own order, they deadlocked. The update below finds
			-- each locked row by its ctid, not by a second probe of the
			-- primary key (that probe cost Postgres 4-11 us a delivery).
			-- A row another transaction changed after this statement began
			-- and that still matches is locked in its new version, which
			-- the update cannot see, and is left unrecorded: only the
			-- fleet's reaping of an instance it took for dead does that
			-- (claim_id kept), and that instance's pushes may be pushed
			-- again by whoever claims them anyway.
			SELECT d.ctid AS tid, d.id, d.updated_at, d.due_at FROM herald_deliveries d
			WHERE d.id = ANY ($1::bigint[]) AND d.status = 'claimed' AND (SELECT count(*) FROM dying) >= 0
			ORDER BY d.id FOR UPDATE
		), recorded AS (
			UPDATE herald_deliveries d SET
				status = u.status, attempts = u.attempts, due_at = now() + u.delay_us * interval '1 microsecond',
				last_error = u.last_error, error_code = u.error_code, message_name = u.message_name,
				updated_at = now(), claim_id = NULL, claimed_by = NULL
			FROM batch b JOIN outcome u ON u.id = b.id
			WHERE d.ctid = b.tid AND d.claim_id = u.claim_id AND d.status = 'claimed'
			RETURNING d.id, d.token, d.status, d.error_code, d.last_error
		), attempts AS (
			-- A failed attempt is logged for the operator's timeline; a
			-- success is the delivery row itself, so the usual batch adds no
			-- write. A push released unattempted (breaker, shutdown) keeps its
			-- attempt count (d is the row as it was before this statement).
			INSERT INTO herald_delivery_attempts (delivery_id, attempt, outcome, error_code, last_error, attempted_at)
			SELECT r.id, u.attempts, r.status, r.error_code, r.last_error, now()
			FROM recorded r JOIN outcome u ON u.id = r.id JOIN herald_deliveries d ON d.id = r.id
			WHERE r.status <> 'sent' AND u.attempts > d.attempts
		), dead AS (
			SELECT DISTINCT ON (token) token, error_code, last_error
			FROM recorded WHERE status = 'token_pruned'
		), pruned_tokens AS (
			DELETE FROM herald_device_tokens t USING dead WHERE $9 AND t.token = dead.token
		), pruned_siblings AS (
			UPDATE herald_deliveries d SET status = 'token_pruned', updated_at = now(),
				error_code = dead.error_code, last_error = dead.last_error, claim_id = NULL
			FROM dead
			WHERE d.token = dead.token AND d.status IN ('pending', 'retry_scheduled')
				AND d.id NOT IN (SELECT id FROM recorded)
			RETURNING 1
`

// recordGiveBack gives back the per-device counts of the pushes given back
// unpushed, after recordSteps.
const recordGiveBack = `		), unpushed AS (
			-- The per-device limits count pushes, and the claim counts each
			-- delivery it takes; one the sender gave back without a push (its
			-- device held after a 429, its platform paused, its lease too
			-- short) gives its count back, in the windows it was counted in:
			-- the claim wrote the row's updated_at and a window's start with
			-- one now() (batch read the row as the claim left it). Otherwise
			-- a throttled device, whose pushes are all claimed again at each
			-- end of its hold and all but one given back, used up its minute
			-- with pushes never made and waited for the next one long after
			-- FCM accepted it again. A claim the fleet freed (its instance
			-- taken for dead) has lost that time: the freeing wrote
			-- updated_at and due_at with its own now(), which a claim never
			-- does (its lease ends after it). Its count stays where it was:
			-- given back at the freeing's time, it freed a place in a later
			-- window that never counted it, and the device got a push more
			-- than its limit there.
			SELECT hashtextextended(r.token, 0) AS device, b.updated_at AS claimed_at
			FROM recorded r JOIN batch b ON b.id = r.id JOIN outcome u ON u.id = r.id
			WHERE u.unpushed AND b.due_at > b.updated_at
		), counts AS (
			-- Their devices' counts, locked in device order, after every
			-- delivery this statement locks, as the claim locks them: the
			-- dead tokens' other pushes (pruned_siblings) included, which
			-- Postgres would otherwise close after this, unreferenced.
			-- Holding a count while it waited for one of those, held by a
			-- claim waiting for that count, deadlocked with the claim.
			SELECT c.device FROM herald_device_counts c
			WHERE c.device = ANY (ARRAY(SELECT device FROM unpushed))
				AND (SELECT count(*) FROM pruned_siblings) >= 0
			ORDER BY c.device FOR UPDATE
		), given_back AS (
			-- Computed on the row as locked: a claim may have started a new
			-- window since this statement began.
			UPDATE herald_device_counts c SET
				minute_count = greatest(0, c.minute_count - (SELECT count(*) FROM unpushed p WHERE p.device = c.device
					AND p.claimed_at >= c.minute_start AND p.claimed_at < c.minute_start + interval '1 minute')),
				hour_count = greatest(0, c.hour_count - (SELECT count(*) FROM unpushed p WHERE p.device = c.device
					AND p.claimed_at >= c.hour_start AND p.claimed_at < c.hour_start + interval '1 hour'))
			WHERE c.device = ANY (ARRAY(SELECT device FROM counts))
`

// recordEnd closes the steps of a record and counts what it recorded.
const recordEnd = `
		)
		-- Postgres runs every data-modifying WITH clause to completion.
		SELECT count(*) FROM recorded`

// Record implements app.DeliveryStore. One statement (so one transaction)
// saves every outcome whose claim is still current, deletes the tokens that
// were pruned, and marks the other open deliveries to those tokens pruned
// too (through the partial index on open deliveries' tokens), so no further
// request is spent on a dead token.
//
// Times are the database's: a delivery's next due time is the database's
// now plus the delay the domain decided (its DueAt minus its UpdatedAt, both
// in the sender's clock), and updated_at is the database's now.
func (r *PostgresDeliveryRepository) Record(ctx context.Context, ds []*notification.Delivery) (int, error) {
	n := len(ds)
	ids, attempts, delays := make(ptrArray[int8Elem], n), make([]int32, n), make(ptrArray[int8Elem], n)
	statuses, lastErrors, codes, names := make(ptrArray[textElem], n), make(ptrArray[wordsElem], n),
		make(ptrArray[wordsElem], n), make(ptrArray[wordsElem], n)
	claims := make(ptrArray[uuidElem], n)
	var dying ptrArray[textElem]
	// unpushed stays nil in the usual batch, where the sender gave nothing
	// back.
	var unpushed []bool
	for i, d := range ds {
		ids[i], attempts[i], statuses[i] = int8Elem(d.ID()), int32(d.Attempts()), textElem(d.Status())
		lastErrors[i], codes[i], names[i] = wordsElem(d.LastError()), wordsElem(d.ErrorCode()), wordsElem(d.MessageName())
		delays[i], claims[i] = int8Elem(max(0, d.DueAt().Sub(d.UpdatedAt()).Microseconds())), uuidElem(d.ClaimID())
		if d.Status() == notification.StatusTokenPruned {
			dying = append(dying, textElem(d.Token()))
		}
		if d.Unpushed() {
			if unpushed == nil {
				unpushed = make([]bool, n)
			}
			unpushed[i] = true
		}
	}
	query, args := recordSQL, []any{ids, statuses, attempts, delays, lastErrors, codes, names, claims, nil, dying}
	if perMinute, _ := r.limits.params(); unpushed != nil && perMinute > 0 {
		query, args = recordGivingBackSQL, append(args, unpushed)
	}
	record := func(prune bool) (recorded int, err error) {
		args[8] = prune
		err = r.db.QueryRow(ctx, query, args...).Scan(&recorded)
		return recorded, err
	}
	recorded, err := record(true)
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "23") {
		// A dead token the host's own tables hold on to (a foreign key, a
		// trigger) cannot be deleted: the batch's outcomes are recorded
		// without deleting it, rather than not at all (when every push in
		// the batch, sent, would be pushed again after its lease). The
		// token is tried again at its next UNREGISTERED.
		recorded, err = record(false)
	}
	if err != nil {
		return 0, fmt.Errorf("record delivery outcomes: %w", err)
	}
	return recorded, nil
}

// CountByStatus returns how many deliveries are in each status.
func (r *PostgresDeliveryRepository) CountByStatus(ctx context.Context) (map[notification.DeliveryStatus]int, error) {
	rows, err := r.db.Query(ctx, `SELECT status, count(*) FROM herald_deliveries GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count deliveries: %w", err)
	}
	counts := map[notification.DeliveryStatus]int{}
	var status string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&status, &n}, func() error {
		counts[notification.DeliveryStatus(status)] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count deliveries: %w", err)
	}
	return counts, nil
}

// ListForNotification returns a notification's deliveries.
func (r *PostgresDeliveryRepository) ListForNotification(ctx context.Context, notificationID uuid.UUID) ([]*notification.Delivery, error) {
	return r.list(ctx, `WHERE notification_id = $1 ORDER BY id`, notificationID)
}

// ListByStatus returns up to limit deliveries in status, most recently
// changed first.
func (r *PostgresDeliveryRepository) ListByStatus(ctx context.Context, status notification.DeliveryStatus, limit int) ([]*notification.Delivery, error) {
	return r.list(ctx, `WHERE status = $1 ORDER BY updated_at DESC, id DESC LIMIT $2`, string(status), limit)
}

func (r *PostgresDeliveryRepository) list(ctx context.Context, where string, args ...any) ([]*notification.Delivery, error) {
	rows, err := r.db.Query(ctx, `SELECT id, notification_id, token, status, attempts, due_at, claim_id,
		last_error, error_code, message_name, updated_at FROM herald_deliveries `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	ds, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*notification.Delivery, error) {
		var (
			id                                int64
			notificationID                    uuid.UUID
			token, status, lastErr, code, msg string
			attempts                          int
			due, updated                      time.Time
			claim                             *uuid.UUID
		)
		if err := row.Scan(&id, &notificationID, &token, &status, &attempts, &due, &claim, &lastErr, &code, &msg, &updated); err != nil {
			return nil, err
		}
		var claimID uuid.UUID
		if claim != nil {
			claimID = *claim
		}
		return notification.DeliveryFromDatabase(id, notificationID, token, notification.DeliveryStatus(status),
			attempts, due, claimID, lastErr, code, msg, updated), nil
	})
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return ds, nil
}

// RetryFailed makes failed deliveries pending again, due now by the
// database's clock with a fresh attempt count, and returns how many it
// changed: those with the given ids (RetryBatch per statement), or when ids
// is empty at most limit failed deliveries, the oldest failures first
// (RetryAll retries them all, batch by batch). It is idempotent: a delivery
// that is no longer failed is left alone. Deliveries whose token was pruned
// or moved cannot be retried, and a retried delivery is still pushed only
// if its token belongs to its notification's recipient when it is claimed.
func (r *PostgresDeliveryRepository) RetryFailed(ctx context.Context, ids []int64, limit int) (int, error) {
	if len(ids) == 0 {
		return r.retryOldest(ctx, nil, limit)
	}
	changed := 0
	for start := 0; start < len(ids); start += RetryBatch {
		tag, err := r.db.Exec(ctx, `
			UPDATE herald_deliveries SET status = 'pending', attempts = 0, due_at = now(), claim_id = NULL, updated_at = now()
			WHERE status = 'failed' AND id = ANY ($1::bigint[])`, ids[start:min(start+RetryBatch, len(ids))])
		if err != nil {
			return changed, fmt.Errorf("retry failed deliveries: %w", err)
		}
		changed += int(tag.RowsAffected())
	}
	return changed, r.signalIf(ctx, changed > 0)
}

// retryOldest makes at most limit failed deliveries pending, the oldest
// failures first, only those that failed at or before failedBy if it is not
// nil.
func (r *PostgresDeliveryRepository) retryOldest(ctx context.Context, failedBy *time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("retry failed deliveries: limit %d must be positive", limit)
	}
	tag, err := r.db.Exec(ctx, `
		UPDATE herald_deliveries SET status = 'pending', attempts = 0, due_at = now(), claim_id = NULL, updated_at = now()
		WHERE id IN (
			SELECT id FROM herald_deliveries
			WHERE status = 'failed' AND ($2::timestamptz IS NULL OR updated_at <= $2)
			ORDER BY updated_at, id LIMIT $1
			FOR UPDATE SKIP LOCKED)`, limit, failedBy)
	if err != nil {
		return 0, fmt.Errorf("retry failed deliveries: %w", err)
	}
	return int(tag.RowsAffected()), r.signalIf(ctx, tag.RowsAffected() > 0)
}

func (r *PostgresDeliveryRepository) signalIf(ctx context.Context, changed bool) error {
	if !changed {
		return nil
	}
	return r.signal(ctx)
}

// RetryBatch is how many failed deliveries RetryAll makes pending in one
// statement (one short transaction).
const RetryBatch = 1000

// RetryAll makes every delivery that has failed by now (the database's
// clock) pending again, RetryBatch at a time, each batch its own statement,
// until none is left or ctx ends, and returns how many it changed. A
// retried delivery that fails again while it runs is not retried again, so
// it always ends. progress, if not nil, is called after each batch with the
// running total. Each batch is idempotent: running it again, or after an
// interruption, only retries what is still failed.
func (r *PostgresDeliveryRepository) RetryAll(ctx context.Context, progress func(total int)) (int, error) {
	var failedBy time.Time
	if err := r.db.QueryRow(ctx, `SELECT now()`).Scan(&failedBy); err != nil {
		return 0, fmt.Errorf("retry failed deliveries: %w", err)
	}
	total := 0
	for {
		n, err := r.retryOldest(ctx, &failedBy, RetryBatch)
		total += n
		if err != nil {
			return total, err
		}
		if progress != nil && n > 0 {
			progress(total)
		}
		if n < RetryBatch {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}
