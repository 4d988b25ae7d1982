package adapters

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
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

// expandIsolating expands the next chunk of at most limit tokens of one
// unfinished broadcast, picked as ExpandBroadcastChunk picks it, in one
// transaction: the deliveries are inserted under a savepoint, and a
// deterministic failure is narrowed down by halving to the single tokens
// whose delivery the database refuses. Those are counted in the
// broadcast's refused, with the last one's reason (its token shown by
// TokenHash) in refusal; the cursor moves past them like any other. A
// transient failure rolls everything back and is returned, and so is a
// chunk of which every delivery is refused: that is the host's database
// refusing Herald, not one token, and skipping would lose the broadcast.
func (r *PostgresDeliveryRepository) expandIsolating(ctx context.Context, limit int) (created int, found bool, err error) {
	err = pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		var id [16]byte
		var cancelled bool
		var tokens []string
		err := tx.QueryRow(ctx, broadcastChunkSQL+`
			SELECT b.notification_id, b.cancelled, ARRAY(SELECT token FROM chunk ORDER BY token) FROM b`, limit).
			Scan(&id, &cancelled, &tokens)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		var ref refusals
		if created, err = insertIsolating(ctx, tx, id, tokens, &ref); err != nil {
			return err
		}
		if len(tokens) > 1 && ref.count == len(tokens) {
			// Every delivery refused is no token's fault: the host's
			// database refuses Herald's writes (a freeze trigger, a foreign
			// key its own code has not filled yet). Skipping would lose the
			// whole broadcast for good; the chunk fails as before and is
			// tried again later, nothing skipped.
			return ref.err
		}
		var last, reason *string
		if len(tokens) > 0 {
			last = &tokens[len(tokens)-1]
		}
		if ref.count > 0 {
			reason = &ref.last
		}
		// The chunk's own statement would have finished the broadcast on
		// the same facts: a short chunk, or a cancelled notification
		// (whose chunk is empty).
		if _, err := tx.Exec(ctx, `UPDATE herald_broadcasts SET
				last_token = coalesce($2, last_token),
				expanded = least(expanded::numeric + $3, 9223372036854775807)::bigint,
				refused = least(refused::numeric + $4, 9223372036854775807)::bigint,
				refusal = coalesce($5, refusal),
				finished_at = CASE WHEN $3 < $6 OR $7 THEN now() END
			WHERE notification_id = $1`, id, last, len(tokens), ref.count, reason, limit, cancelled); err != nil {
			return err
		}
		found = true
		if created > 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, deliveriesChannel); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return created, found, nil
}

// refusals counts the deliveries the database refused and keeps the last
// one's reason.
type refusals struct {
	count int
	last  string
	err   error // the first refusal
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
		if ref.err == nil {
			ref.err = err
		}
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
