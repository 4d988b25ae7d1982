package adapters

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
	// DeadLetters are dead letters naming the user: rewritten without
	// their part (other users' notifications in them stay replayable), or
	// deleted when nothing else was in them.
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
// reads only the notification ids). Dead letters are treated alike (see
// forgetInDeadLetters): a letter goes only when nothing of other users is
// left in it.
//
// Other users' pushes are not disturbed: it locks only the user's rows,
// and the open broadcasts, whose expansion waits until it is done (a chunk
// under way is waited for, so no delivery to the user's tokens slips in),
// and, for its last steps, the relay's position (a relay batch under way is
// waited for, and the next waits, or starts again if it read the outbox
// before this ended: see the comments below). A
// claimed push of the user's that is in a sender's hands may still go out
// until its lease ends (ErasureReport.InFlightUntil); its outcome finds no
// row and records nothing. It is idempotent: on a pool, an attempt that
// loses a deadlock or a serialization race to another transaction is run
// again (up to five attempts in all). The host should stop
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
	// Run again if it loses a deadlock to a transaction Herald does not
	// order (the relay's, a host's): it is idempotent.
	err = retryLostRace(ctx, r.db, func() error {
		report = ErasureReport{}
		return r.forgetUser(ctx, userID, string(goJSON), &report)
	})
	if err != nil {
		return report, fmt.Errorf("forget user: %w", err)
	}
	return report, nil
}

// forgetUser does the work of ForgetUser in one transaction.
func (r *PostgresDeliveryRepository) forgetUser(ctx context.Context, userID, goJSON string, report *ErasureReport) error {
	return pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		// Open broadcasts first: a chunk being expanded (it holds its
		// broadcast's row, and may have read the user's tokens before they
		// go) is waited for, so the statements below see its deliveries;
		// until this transaction ends the expander skips these broadcasts.
		// Other users' continuations cover only their own tokens.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM herald_broadcasts
			WHERE finished_at IS NULL AND (recipient IS NULL OR recipient = $1) FOR UPDATE`, userID); err != nil {
			return err
		}
		// Then the user's tokens, in byte order, before any delivery (the
		// lock order, see the package documentation): a registration, an
		// unregistration and a sender's record of outcomes that prunes
		// tokens all lock a token before its deliveries; locking the
		// deliveries first deadlocked with them. The per-device counts go
		// last, in device order, as a claim takes them (see the end).
		if _, err := tx.Exec(ctx, `SELECT 1 FROM herald_device_tokens WHERE user_id = $1
			ORDER BY token COLLATE "C" FOR UPDATE`, userID); err != nil {
			return err
		}
		var inFlight *time.Time
		err := tx.QueryRow(ctx, `
			WITH tokens AS (
				SELECT token FROM herald_device_tokens WHERE user_id = $1
			), notifications AS (
				SELECT id FROM herald_notifications WHERE recipient = $1
			), deliveries AS (
				-- Each deleted row as it was when deleted (a claim that
				-- committed while this waited for its lock included), so
				-- that a push claimed at that moment is reported in flight.
				-- Locked in id order, as a sender's record of outcomes
				-- locks its batch.
				DELETE FROM herald_deliveries d WHERE d.id IN (
					SELECT x.id FROM herald_deliveries x
					WHERE x.token IN (SELECT token FROM tokens)
						AND x.notification_id NOT IN (SELECT id FROM notifications)
					ORDER BY x.id FOR UPDATE)
				RETURNING d.status, d.due_at
			), preferences AS (
				DELETE FROM herald_preferences WHERE user_id = $1 RETURNING 1
			)
			SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM preferences),
				(SELECT max(due_at) FROM deliveries WHERE status = 'claimed')`, userID).Scan(&report.Deliveries, &report.Preferences, &inFlight)
		if err != nil {
			return err
		}
		if inFlight != nil {
			report.InFlightUntil = *inFlight
		}
		// Outbox rows and dead letters first, while the notification ids
		// are still there to be matched. The outbox is read whole once,
		// before anything below holds the relay back; what was written
		// after that read's snapshot (its xmin on) is read again at the
		// end, when nothing more can come.
		outboxRows, since, err := forgetInOutbox(ctx, tx, userID, goJSON, "0")
		if err != nil {
			return err
		}
		// The relay's position then: a relay batch under way holds its
		// row for the whole batch (watermill-sql) and may be setting a
		// message that names the user aside as a new dead letter, which
		// no statement here could see before it commits. Updating the
		// row (to the same values) waits for that batch, and holds the
		// next one until this transaction ends (only its last steps,
		// which read through indexes). A batch runs under REPEATABLE
		// READ: one whose snapshot was taken before this commits (it
		// started waiting for the row meanwhile) would read the outbox
		// and the dead letters as they were, the user's data included;
		// finding the row updated since its snapshot, it fails instead
		// ("could not serialize access due to concurrent update"), which
		// watermill-sql takes for a lost race and retries at once, with a
		// fresh snapshot.
		if _, err := tx.Exec(ctx, `UPDATE watermill_offsets_herald_outbox SET offset_acked = offset_acked
			WHERE consumer_group = 'herald_relay'`); err != nil {
			return err
		}
		// The open deliveries of the user's notifications (the others to
		// their devices went above) are locked until the end, so that no
		// claim takes one any more (claims skip locked rows), and read as
		// they are now: one claimed since the first statement above may
		// still be pushed, and is reported. Through the index on
		// notification ids: the relay waits meanwhile.
		var claimedUntil *time.Time
		if err := tx.QueryRow(ctx, `
			SELECT max(due_at) FILTER (WHERE status = 'claimed') FROM (
				SELECT d.status, d.due_at FROM herald_deliveries d
				WHERE d.notification_id IN (SELECT id FROM herald_notifications WHERE recipient = $1)
					AND d.status IN ('pending', 'retry_scheduled', 'claimed')
				ORDER BY d.id -- the lock order: see the package documentation
				FOR UPDATE OF d) open`, userID).Scan(&claimedUntil); err != nil {
			return err
		}
		if claimedUntil != nil && claimedUntil.After(report.InFlightUntil) {
			report.InFlightUntil = *claimedUntil
		}
		// Dead letters before the outbox's last read: a replay under way
		// holds its letters until it has put them back on the outbox, so
		// locking the letters waits for it, and the read after it sees
		// (and cleans) what it republished; a replay that comes later
		// waits for this transaction and republishes the letters without
		// the user.
		deadLetters, err := forgetInDeadLetters(ctx, tx, userID)
		if err != nil {
			return err
		}
		more, _, err := forgetInOutbox(ctx, tx, userID, goJSON, since)
		if err != nil {
			return err
		}
		outboxRows += more
		report.OutboxRows, report.DeadLetters = outboxRows, deadLetters
		// The notifications take their deliveries and continuations with
		// them (ON DELETE CASCADE); a sender's late outcome for one of them
		// finds no row.
		// A token registered meanwhile goes too, with any open delivery
		// made for it since (through the partial index on open tokens).
		var late int
		var devices []int64
		err = tx.QueryRow(ctx, `
			WITH notifications AS (DELETE FROM herald_notifications WHERE recipient = $1 RETURNING 1),
			tokens AS (DELETE FROM herald_device_tokens WHERE user_id = $1 RETURNING token),
			late AS (
				DELETE FROM herald_deliveries WHERE token IN (SELECT token FROM tokens)
					AND status IN ('pending', 'retry_scheduled', 'claimed')
					AND notification_id NOT IN (SELECT id FROM herald_notifications WHERE recipient = $1)
				RETURNING 1
			), cursors AS (
				-- A broadcast half expanded may have stopped at one of
				-- their tokens: its cursor moves back to the greatest other
				-- token before it (or the start), which resumes at the
				-- same place now that theirs are gone.
				UPDATE herald_broadcasts b SET last_token = coalesce((SELECT max(t.token)
					FROM herald_device_tokens t WHERE t.token < b.last_token AND t.user_id <> $1), '')
				WHERE b.last_token IN (SELECT token FROM tokens)
			)
			SELECT (SELECT count(*) FROM notifications), (SELECT count(*) FROM tokens), (SELECT count(*) FROM late),
				(SELECT coalesce(array_agg(DISTINCT hashtextextended(token, 0)), '{}') FROM tokens)`,
			userID).Scan(&report.Notifications, &report.Tokens, &late, &devices)
		if err != nil {
			return err
		}
		report.Deliveries += late
		// Their devices' counts last (by token hash: a device whose hash
		// collides with theirs loses its count too, and may get its limit
		// again in the current window), locked in device order: a claim
		// holds its deliveries and takes its devices' counts in that
		// order. Deleted in the statement above, before its notifications'
		// deliveries (the cascade runs at its end), they deadlocked with a
		// claim of one of those that this could not lock in time (made
		// after the user's open deliveries were locked, by the expansion
		// of a continuation of their notification) and that waited for a
		// count this held. Here nothing is waited for after a count.
		_, err = tx.Exec(ctx, `
			DELETE FROM herald_device_counts WHERE device IN (
				SELECT device FROM herald_device_counts WHERE device = ANY ($1::bigint[])
				ORDER BY device FOR UPDATE)`, devices)
		return err
	})
}

// forgetInOutbox takes userID out of the outbox rows written by
// transactions from xid since on (every row for "0"), in tx, before their
// notifications are deleted: a row the relay has consumed and that names
// them is deleted; one it has not keeps only other users' notification ids,
// and each event whose data names them loses its data (the relay reads only
// the ids). It returns how many rows it changed, and the xmin of the
// snapshot it read with: rows written later by transactions it could not
// see have that id or a greater one.
func forgetInOutbox(ctx context.Context, tx pgx.Tx, userID, goJSON, since string) (int, string, error) {
	var changed int
	var xmin string
	err := tx.QueryRow(ctx, `
		WITH ids AS (
			SELECT coalesce(array_agg(id::text), '{}') AS ids FROM herald_notifications WHERE recipient = $1
		), named AS (
			SELECT m."transaction_id", m."offset",
				-- No offsets yet: the relay has consumed nothing.
				coalesce((m."transaction_id", m."offset") <= (o.last_processed_transaction_id, o.offset_acked)
					AND o.last_processed_transaction_id < pg_snapshot_xmax(pg_current_snapshot()), false) AS consumed
			FROM watermill_herald_outbox m
			LEFT JOIN watermill_offsets_herald_outbox o ON o.consumer_group = 'herald_relay'
			WHERE m."transaction_id" >= $3::xid8
				AND (strpos(m.payload::text, $2) > 0 OR strpos(m.payload::text, to_json($1::text)::text) > 0
					OR EXISTS (SELECT 1 FROM ids, jsonb_array_elements(m.payload::jsonb->'events') e,
						jsonb_array_elements_text(e->'notifications') n WHERE n = ANY (ids.ids)))
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
		)
		SELECT (SELECT count(*) FROM dropped) + (SELECT count(*) FROM rewritten),
			pg_snapshot_xmin(pg_current_snapshot())::text`,
		userID, goJSON, since).Scan(&changed, &xmin)
	if err != nil {
		return 0, "", err
	}
	return changed, xmin, nil
}

// forgetInDeadLetters takes userID out of the dead letters that name them
// (by user id as a JSON string, as Go's encoder or Postgres's writes it, or
// by one of their notification ids), in tx, before their notifications are
// deleted, and returns how many letters it changed. A letter is other
// users' work waiting to be replayed, and a user id such as "42" may occur
// in it only by chance, so a letter is not simply deleted: each event loses
// the user's notification ids, and its data if the data names the user (the
// relay reads only the ids); an event left with none of its notifications,
// and a letter left with no event, go. A letter that is not a JSON outbox
// message (a truncated oversized one) cannot be read apart and goes whole.
func forgetInDeadLetters(ctx context.Context, tx pgx.Tx, userID string) (int, error) {
	var names [][]byte
	for _, html := range []bool{true, false} { // Go's encoding, and one without HTML escapes
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(html)
		if err := enc.Encode(userID); err != nil {
			return 0, err
		}
		names = append(names, bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	}
	rows, err := tx.Query(ctx, `
		WITH ids AS (
			SELECT coalesce(array_agg(id::text), '{}') AS ids FROM herald_notifications WHERE recipient = $1
		)
		SELECT l.id, l.payload, ids.ids FROM herald_dead_letters l, ids
		WHERE position($2::bytea IN l.payload) > 0 OR position($3::bytea IN l.payload) > 0
			OR position(convert_to(to_json($1::text)::text, 'UTF8') IN l.payload) > 0
			OR EXISTS (SELECT 1 FROM unnest(ids.ids) id WHERE position(convert_to(id, 'UTF8') IN l.payload) > 0)
		FOR UPDATE OF l`, userID, names[0], names[1])
	if err != nil {
		return 0, err
	}
	type letter struct {
		id      int64
		payload []byte
		ids     []string
	}
	letters, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (letter, error) {
		var l letter
		err := row.Scan(&l.id, &l.payload, &l.ids)
		return l, err
	})
	if err != nil {
		return 0, err
	}
	var pgName []byte
	if len(letters) > 0 {
		if err := tx.QueryRow(ctx, `SELECT convert_to(to_json($1::text)::text, 'UTF8')`, userID).Scan(&pgName); err != nil {
			return 0, err
		}
		names = append(names, pgName)
	}
	for _, l := range letters {
		kept, ok := withoutUser(l.payload, l.ids, names)
		if ok {
			_, err = tx.Exec(ctx, `UPDATE herald_dead_letters SET payload = $2 WHERE id = $1`, l.id, kept)
		} else {
			_, err = tx.Exec(ctx, `DELETE FROM herald_dead_letters WHERE id = $1`, l.id)
		}
		if err != nil {
			return 0, err
		}
	}
	return len(letters), nil
}

// withoutUser returns an outbox message payload without the user's part
// (see forgetInDeadLetters), and false when nothing is left of it or it is
// not an outbox message.
func withoutUser(payload []byte, userIDs []string, names [][]byte) ([]byte, bool) {
	var msg map[string]json.RawMessage
	if err := json.Unmarshal(payload, &msg); err != nil {
		return nil, false
	}
	var events []map[string]json.RawMessage
	if err := json.Unmarshal(msg["events"], &events); err != nil {
		return nil, false
	}
	kept := make([]map[string]json.RawMessage, 0, len(events))
	for _, ev := range events {
		var ids []string
		if raw, ok := ev["notifications"]; ok {
			if err := json.Unmarshal(raw, &ids); err != nil {
				return nil, false
			}
		}
		others := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return slices.Contains(userIDs, id) })
		named := slices.ContainsFunc(names, func(name []byte) bool { return bytes.Contains(ev["data"], name) })
		if len(others) == 0 && (len(ids) > 0 || named) {
			continue // it was only the user's
		}
		if len(others) < len(ids) {
			b, err := json.Marshal(others)
			if err != nil {
				return nil, false
			}
			ev["notifications"] = b
		}
		if named {
			ev["data"] = json.RawMessage(`{}`)
		}
		kept = append(kept, ev)
	}
	if len(kept) == 0 {
		return nil, false
	}
	b, err := json.Marshal(kept)
	if err != nil {
		return nil, false
	}
	msg["events"] = b
	out, err := json.Marshal(msg)
	if err != nil {
		return nil, false
	}
	return out, true
}
