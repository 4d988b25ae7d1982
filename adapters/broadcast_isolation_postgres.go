package adapters

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/app"
)

// isolatedChunkSize bounds the tokens one isolating expansion takes. Each
// refused delivery costs about two savepoints per halving, so a chunk
// every one of whose deliveries is refused (a host trigger refusing all)
// costs about twice its size in round trips: bounded here, the broadcast
// still moves on at every call. A chunk with a few refusals among its
// tokens finds each in about log2(isolatedChunkSize) halvings.
const isolatedChunkSize = 1000

// maxRefusalLength bounds a stored refusal reason, in bytes.
const maxRefusalLength = 500

// maxHold bounds how long a held broadcast waits before its chunk is tried
// again. The first hold is a second, each hold in a row doubles it. It must
// stay under holdAheadLimitSQL.
const maxHold = time.Minute

// holdAheadLimitSQL is how far ahead a hold may end and still be Herald's:
// one ending later was written around Herald, and neither the expander
// (broadcastChunkSQL) nor an operator's page (broadcastsSQL) takes it for
// a hold.
const holdAheadLimitSQL = "interval '2 minutes'"

// clearHoldSQL is the SET list that ends a broadcast's hold: when it goes
// on, and when it is finished.
const clearHoldSQL = "held_at = NULL, held_mark = NULL, held_until = NULL, holds = 0, held_reason = NULL"

// expandIsolating expands the next chunk of at most limit tokens of one
// unfinished broadcast, picked as ExpandBroadcastChunk picks it, in one
// transaction: the deliveries are inserted under a savepoint, and a
// deterministic failure is narrowed down by halving to the single tokens
// whose delivery the database refuses. Those are counted in the
// broadcast's refused, with the last one's reason (its token shown by
// TokenHash) in refusal; the cursor moves past them like any other. A
// transient failure rolls everything back and is returned.
//
// A chunk every delivery of which is refused, be it of one token, is held
// instead: nothing skipped or counted, the cursor unmoved, and the
// broadcast steps aside (held_until, backing off up to maxHold) so that the
// broadcasts behind it go on. Such a refusal is either the host's database
// refusing Herald (a freeze trigger), where skipping would lose those
// pushes for good, or the tokens' own (a host constraint refusing just the
// tokens that make up the chunk: a broadcast's tail, a one-device
// broadcast), where holding must not last forever. What tells them apart
// is whether the host accepts Herald's other deliveries meanwhile: the hold
// records the database's clock at the refusal (held_at) and the highest
// delivery id then (held_mark, so that the look below reads the newest rows
// by the primary key, never the whole table). If the chunk is refused again
// and some delivery has been created since (an id above held_mark, by a
// transaction that started after held_at, so its insert ran after the
// refusal), the host accepts Herald's writes but not these tokens: they
// are counted and skipped as above. A delivery written before the refusal
// (the chunk before a freeze started, a transaction that began before it)
// proves nothing and is not taken. So a freeze loses nothing however long
// it lasts, and a bad token costs its own broadcast a wait until Herald
// next writes any delivery, and nobody else anything. What it cannot tell
// apart: a host that refuses only some of Herald's deliveries, yet every
// one of this chunk's, for reasons not the tokens' (only broadcasts', or a
// freeze lifted and set again between two tries), gets them counted and
// skipped, as a chunk with some deliveries accepted always did.
func (r *PostgresDeliveryRepository) expandIsolating(ctx context.Context, limit int) (chunk app.BroadcastChunk, err error) {
	err = pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		var id [16]byte
		var cancelled bool
		var tokens []string
		var heldAt *time.Time
		var heldMark *int64
		var holds int
		err := tx.QueryRow(ctx, broadcastChunkSQL+`
			SELECT b.notification_id, b.cancelled, ARRAY(SELECT token FROM chunk ORDER BY token),
				b.held_at, b.held_mark, b.holds FROM b`, limit).
			Scan(&id, &cancelled, &tokens, &heldAt, &heldMark, &holds)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		chunk = app.BroadcastChunk{Found: true, NotificationID: id}
		var ref refusals
		if chunk.Created, err = insertIsolating(ctx, tx, id, tokens, &ref); err != nil {
			return err
		}
		if len(tokens) > 0 && ref.count == len(tokens) {
			accepted := false
			if heldAt != nil && heldMark != nil {
				if accepted, err = acceptedSince(ctx, tx, *heldMark, *heldAt); err != nil {
					return err
				}
			}
			if !accepted {
				chunk.Held, chunk.Refusal = true, ref.last
				chunk.HeldFor = min(time.Second<<min(max(holds, 0), 7), maxHold)
				return hold(ctx, tx, id, chunk.HeldFor, ref.last)
			}
		}
		var last, reason *string
		if len(tokens) > 0 {
			last = &tokens[len(tokens)-1]
		}
		if ref.count > 0 {
			reason = &ref.last
			chunk.Refused, chunk.Refusal = ref.count, ref.last
		}
		// The chunk's own statement would have finished the broadcast on
		// the same facts: a short chunk, or a cancelled notification
		// (whose chunk is empty).
		if _, err := tx.Exec(ctx, `UPDATE herald_broadcasts SET
				last_token = coalesce($2, last_token),
				expanded = least(expanded::numeric + $3, 9223372036854775807)::bigint,
				refused = least(refused::numeric + $4, 9223372036854775807)::bigint,
				refusal = coalesce($5, refusal),
				finished_at = CASE WHEN $3 < $6 OR $7 THEN now() END,
				`+clearHoldSQL+`
			WHERE notification_id = $1`, id, last, len(tokens), ref.count, reason, limit, cancelled); err != nil {
			return err
		}
		if chunk.Created > 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, deliveriesChannel); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return app.BroadcastChunk{}, err
	}
	return chunk, nil
}

// hold holds broadcast id for d after a refusal of its whole chunk (see
// expandIsolating), keeping reason (the refusal, its token shown by its
// hash) for operators. The highest delivery id is read before the clock, so
// that any delivery created by a transaction started after held_at has an
// id above held_mark. It is the highest id handed out, not only the
// highest committed: a delivery written before the refusal by a
// transaction still open then has an id below the mark, so it is never
// taken as evidence, whatever the clock says. Were the mark the highest
// committed id, only its created_at (the transaction's start) would tell
// it apart, and a database clock stepped back before the hold makes a
// start before the refusal look later than held_at: such a delivery,
// committed after the refusal, had a freeze's held tokens counted refused
// and their pushes lost.
func hold(ctx context.Context, tx pgx.Tx, id [16]byte, d time.Duration, reason string) error {
	var mark int64
	if err := tx.QueryRow(ctx, `SELECT greatest(coalesce(max(id), 0), coalesce(pg_sequence_last_value(
			pg_get_serial_sequence('herald_deliveries', 'id')::regclass), 0)) FROM herald_deliveries`).Scan(&mark); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `UPDATE herald_broadcasts SET held_mark = $2, held_at = clock_timestamp(),
			held_until = clock_timestamp() + $3::bigint * interval '1 millisecond', holds = least(greatest(holds, 0), 1000) + 1,
			held_reason = $4
		WHERE notification_id = $1`, id, mark, d.Milliseconds(), reason)
	return err
}

// acceptedSince reports whether some delivery above mark was created by a
// transaction that began after at (see expandIsolating). It reads in id
// order from the mark, a page of acceptedPage rows at a time, so that it
// reads the newest rows by the primary key and never the whole table, and
// stops at the first such delivery. The rows before it were written after
// the refusal by transactions in flight then: another instance's chunk of
// a broadcast (5,000 by default), a host's transaction. Looking at the
// first page only, such a chunk hid every delivery written after it, and
// the broadcast was held again, for good once nothing more was written.
func acceptedSince(ctx context.Context, tx pgx.Tx, mark int64, at time.Time) (bool, error) {
	for {
		var last *int64
		var accepted bool
		if err := tx.QueryRow(ctx, `SELECT max(id), coalesce(bool_or(created_at > $2), false) FROM (
				SELECT id, created_at FROM herald_deliveries WHERE id > $1 ORDER BY id LIMIT $3) d`,
			mark, at, acceptedPage).Scan(&last, &accepted); err != nil {
			return false, err
		}
		if accepted || last == nil {
			return accepted, nil
		}
		mark = *last
	}
}

// acceptedPage is how many deliveries acceptedSince reads at a time.
const acceptedPage = 1000

// refusals counts the deliveries the database refused and keeps the last
// one's reason.
type refusals struct {
	count int
	last  string
}

// insertIsolating inserts the deliveries of notification id to tokens under
// a savepoint of tx and returns how many it created. When that fails for a
// reason that is not transient it tries each half again, down to single
// tokens, which it records in ref as refused.
func insertIsolating(ctx context.Context, tx pgx.Tx, id [16]byte, tokens []string, ref *refusals) (int, error) {
	if len(tokens) == 0 {
		return 0, nil
	}
	var created int
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		tag, err := sp.Exec(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
			SELECT n.id, t.token, 'pending', greatest(now(), n.send_at), now(), now()
			FROM herald_notifications n, unnest($2::text[]) t (token) WHERE n.id = $1
			ON CONFLICT (notification_id, token) DO NOTHING`, id, tokens)
		created = int(tag.RowsAffected())
		return err
	})
	switch {
	case err == nil:
		return created, nil
	case IsTransient(err):
		return 0, err
	case len(tokens) == 1:
		ref.count++
		// A host's message may quote the token: it is shown by its hash.
		ref.last = truncateText(storableText(TokenHash(tokens[0])+": "+
			strings.ReplaceAll(err.Error(), tokens[0], TokenHash(tokens[0]))), maxRefusalLength)
		return 0, nil
	}
	mid := len(tokens) / 2
	first, err := insertIsolating(ctx, tx, id, tokens[:mid], ref)
	if err != nil {
		return 0, err
	}
	second, err := insertIsolating(ctx, tx, id, tokens[mid:], ref)
	return first + second, err
}
