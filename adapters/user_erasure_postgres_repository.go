package adapters

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErasureReport counts what forgetting a user deleted.
type ErasureReport struct {
	// Notifications are the user's inbox entries, with their deliveries.
	Notifications int `json:"notifications"`
	// Deliveries are the other deliveries to the user's devices
	// (broadcasts, or pushes addressed to a previous owner of a token).
	Deliveries int `json:"deliveries"`
	// Tokens are the user's device tokens.
	Tokens int `json:"tokens"`
	// Preferences is 1 if the user had preferences.
	Preferences int `json:"preferences"`
	// OutboxRows are outbox rows naming the user that the relay had
	// consumed (deleted) or not yet (the user's notifications removed
	// from them).
	OutboxRows int `json:"outbox_rows"`
	// DeadLetters are dead letters naming the user.
	DeadLetters int `json:"dead_letters"`
	// InFlightUntil is, when a push to one of the user's devices was
	// claimed by a sender at the time, the end of the last such lease: a
	// push already on the wire may still arrive until then (never
	// recorded back). Zero when none was claimed.
	InFlightUntil time.Time `json:"in_flight_until,omitzero"`
}

// ForgetUser erases, in one transaction, every row of Herald's tables that
// names userID or one of their device tokens: their notifications (and so
// their deliveries and any continuation of their expansion), every other
// delivery to their tokens, their tokens, preferences and per-device
// counts, any broadcast cursor left at one of their tokens, the outbox
// rows and dead letters that name them (by user id as a JSON string, or by
// one of their notification ids). Outbox rows the relay
// has consumed are deleted; one not yet consumed is kept, for the other
// users it may concern, with the user's notification ids removed from its
// events and the data of each event that names them emptied (the relay
// reads only the notification ids).
//
// Other users' pushes are not disturbed: it locks only the user's rows. A
// claimed push of the user's that is in a sender's hands may still go out
// until its lease ends (ErasureReport.InFlightUntil); its outcome finds no
// row and records nothing. It is idempotent. The host should stop
// registering tokens for the user first (a token registered concurrently
// may survive).
//
// Finished deliveries to the user's devices are found by a scan of
// herald_deliveries (no index covers them; housekeeping keeps that table
// to its retention), which an erasure request can afford.
func (r *PostgresDeliveryRepository) ForgetUser(ctx context.Context, userID string) (ErasureReport, error) {
	var report ErasureReport
	// The user id as JSON string text, as Go's encoder writes it (it
	// escapes <, > and &) and as Postgres's does.
	goJSON, err := json.Marshal(userID)
	if err != nil {
		return report, fmt.Errorf("forget user: %w", err)
	}
	err = pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		var inFlight *time.Time
		// Deliveries first: a sender records an outcome by locking its
		// delivery and then, for a dead token, the token; taking the locks
		// in the same order never deadlocks with it, nor with a claim
		// (deliveries, then per-device counts).
		err := tx.QueryRow(ctx, `
			WITH tokens AS (
				SELECT token FROM herald_device_tokens WHERE user_id = $1
			), notifications AS (
				SELECT id FROM herald_notifications WHERE recipient = $1
			), in_flight AS (
				SELECT max(d.due_at) AS until FROM herald_deliveries d
				WHERE d.status = 'claimed' AND (d.token IN (SELECT token FROM tokens)
					OR d.notification_id IN (SELECT id FROM notifications))
			), deliveries AS (
				DELETE FROM herald_deliveries d
				WHERE d.token IN (SELECT token FROM tokens)
					AND d.notification_id NOT IN (SELECT id FROM notifications)
				RETURNING 1
			), preferences AS (
				DELETE FROM herald_preferences WHERE user_id = $1 RETURNING 1
			)
			SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM preferences),
				(SELECT until FROM in_flight)`, userID).Scan(&report.Deliveries, &report.Preferences, &inFlight)
		if err != nil {
			return err
		}
		if inFlight != nil {
			report.InFlightUntil = *inFlight
		}
		// Outbox rows and dead letters first, while the notification ids
		// are still there to be matched.
		var outboxRows, deadLetters int
		err = tx.QueryRow(ctx, `
			WITH ids AS (
				SELECT coalesce(array_agg(id::text), '{}') AS ids FROM herald_notifications WHERE recipient = $1
			), named AS (
				SELECT m."transaction_id", m."offset",
					-- No offsets yet: the relay has consumed nothing.
					coalesce((m."transaction_id", m."offset") <= (o.last_processed_transaction_id, o.offset_acked)
						AND o.last_processed_transaction_id < pg_snapshot_xmax(pg_current_snapshot()), false) AS consumed
				FROM watermill_herald_outbox m
				LEFT JOIN watermill_offsets_herald_outbox o ON o.consumer_group = 'herald_relay'
				WHERE strpos(m.payload::text, $2) > 0 OR strpos(m.payload::text, to_json($1::text)::text) > 0
					OR EXISTS (SELECT 1 FROM ids, jsonb_array_elements(m.payload::jsonb->'events') e,
						jsonb_array_elements_text(e->'notifications') n WHERE n = ANY (ids.ids))
				FOR UPDATE OF m
			), dropped AS (
				DELETE FROM watermill_herald_outbox m USING named
				WHERE named.consumed AND (m."transaction_id", m."offset") = (named."transaction_id", named."offset")
				RETURNING 1
			), rewritten AS (
				UPDATE watermill_herald_outbox m SET payload = jsonb_set(m.payload::jsonb, '{events}', (
					SELECT coalesce(jsonb_agg(CASE
						-- The relay reads only an event's notification ids: data
						-- that names the user goes, even from an event kept for
						-- the other users it notifies.
						WHEN strpos(x.e->>'data', $2) > 0
							OR strpos((x.e->'data')::text, to_json($1::text)::text) > 0
						THEN x.e || jsonb_build_object('notifications', kept.ns, 'data', '{}'::jsonb)
						ELSE x.e || jsonb_build_object('notifications', kept.ns) END ORDER BY x.ord), '[]'::jsonb)
					FROM jsonb_array_elements(m.payload::jsonb->'events') WITH ORDINALITY AS x(e, ord),
					LATERAL (SELECT coalesce(jsonb_agg(n.v), '[]'::jsonb) AS ns
						FROM jsonb_array_elements(x.e->'notifications') n(v), ids
						WHERE NOT (n.v #>> '{}') = ANY (ids.ids)) kept))::json
				FROM named
				WHERE NOT named.consumed AND (m."transaction_id", m."offset") = (named."transaction_id", named."offset")
				RETURNING 1
			), letters AS (
				DELETE FROM herald_dead_letters l
				WHERE position(convert_to($2, 'UTF8') IN l.payload) > 0
					OR position(convert_to(to_json($1::text)::text, 'UTF8') IN l.payload) > 0
					OR EXISTS (SELECT 1 FROM ids, unnest(ids.ids) id WHERE position(convert_to(id, 'UTF8') IN l.payload) > 0)
				RETURNING 1
			)
			SELECT (SELECT count(*) FROM dropped) + (SELECT count(*) FROM rewritten), (SELECT count(*) FROM letters)`,
			userID, string(goJSON)).Scan(&outboxRows, &deadLetters)
		if err != nil {
			return err
		}
		report.OutboxRows, report.DeadLetters = outboxRows, deadLetters
		// The notifications take their deliveries and continuations with
		// them (ON DELETE CASCADE); a sender's late outcome for one of them
		// finds no row.
		// A token registered meanwhile goes too, with any open delivery
		// made for it since (through the partial index on open tokens).
		var late int
		err = tx.QueryRow(ctx, `
			WITH notifications AS (DELETE FROM herald_notifications WHERE recipient = $1 RETURNING 1),
			tokens AS (DELETE FROM herald_device_tokens WHERE user_id = $1 RETURNING token),
			late AS (
				DELETE FROM herald_deliveries WHERE token IN (SELECT token FROM tokens)
					AND status IN ('pending', 'retry_scheduled', 'claimed')
					AND notification_id NOT IN (SELECT id FROM herald_notifications WHERE recipient = $1)
				RETURNING 1
			), rates AS (
				DELETE FROM herald_device_rates WHERE token IN (SELECT token FROM tokens)
			), cursors AS (
				-- A broadcast half expanded may have stopped at one of
				-- their tokens: its cursor moves back to the greatest other
				-- token before it (or the start), which resumes at the
				-- same place now that theirs are gone.
				UPDATE herald_broadcasts b SET last_token = coalesce((SELECT max(t.token)
					FROM herald_device_tokens t WHERE t.token < b.last_token AND t.user_id <> $1), '')
				WHERE b.last_token IN (SELECT token FROM tokens)
			)
			SELECT (SELECT count(*) FROM notifications), (SELECT count(*) FROM tokens), (SELECT count(*) FROM late)`,
			userID).Scan(&report.Notifications, &report.Tokens, &late)
		report.Deliveries += late
		return err
	})
	if err != nil {
		return report, fmt.Errorf("forget user: %w", err)
	}
	return report, nil
}
