package adapters

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/notification"
)

// PostgresDeviceTokenRepository stores the device token registry in
// herald_device_tokens, one row per token.
type PostgresDeviceTokenRepository struct {
	db DB
}

// NewPostgresDeviceTokenRepository returns a repository on db.
func NewPostgresDeviceTokenRepository(db DB) *PostgresDeviceTokenRepository {
	return &PostgresDeviceTokenRepository{db: requireDB(db)}
}

// openDeliveries is the SQL condition of a delivery that may still be pushed.
const openDeliveries = `d.status IN ('pending', 'retry_scheduled', 'claimed')`

// Upsert registers t: a new token is inserted; a known token is marked seen
// and moves to t's user (its registration time restarts when it moves).
//
// In the same statement, every open delivery to the token addressed to
// another user (pending, retry scheduled, or claimed) is closed
// token_moved, so the device's new owner never receives the previous
// owner's pushes; a sender holding such a claim finds it gone when it
// records. Broadcast deliveries are left alone: any owner may receive a
// broadcast.
//
// It runs UpsertMany's statement for one token.
func (r *PostgresDeviceTokenRepository) Upsert(ctx context.Context, t *notification.DeviceToken) error {
	return r.UpsertMany(ctx, []*notification.DeviceToken{t})
}

// moveDeliveries starts the UPDATE that closes the deliveries d whose
// token now belongs to someone else.
const moveDeliveries = `UPDATE herald_deliveries d SET status = 'token_moved', claim_id = NULL, updated_at = now(),
			error_code = 'TOKEN_MOVED', last_error = 'token registered to another user before the push'`

// UpsertMany registers many tokens in one statement per chunk of
// insertChunk tokens; each chunk commits on its own. The last occurrence of
// a repeated token wins, across the whole slice: repeats are dropped before
// chunking, so a token is written once and never moves back and forth
// between users within one call (which would close its final owner's open
// deliveries when the call is run again). Like Upsert, it closes
// token_moved the open deliveries to those tokens addressed to other
// users.
//
// Tokens are written in token order, whatever the input's: each chunk
// locks its tokens' rows as it upserts them, and two imports sharing
// tokens in opposite orders each waited for a row the other held (a
// deadlock, one import failed). In one order, one waits and both end.
// That is the lock order (see the package documentation): the tokens,
// in byte order, before the deliveries the chunk closes.
func (r *PostgresDeviceTokenRepository) UpsertMany(ctx context.Context, ts []*notification.DeviceToken) error {
	ts = slices.SortedFunc(slices.Values(dedupeTokens(ts)), func(a, b *notification.DeviceToken) int {
		return strings.Compare(a.Token(), b.Token())
	})
	for start := 0; start < len(ts); start += insertChunk {
		chunk := ts[start:min(start+insertChunk, len(ts))]
		n := len(chunk)
		tokens, users, platforms := make(ptrArray[textElem], n), make(ptrArray[textElem], n), make(ptrArray[textElem], n)
		registered, seen := make(ptrArray[timestamptzElem], n), make(ptrArray[timestamptzElem], n)
		for i, t := range chunk {
			tokens[i], users[i], platforms[i] = textElem(t.Token()), textElem(t.UserID()), textElem(t.Platform())
			registered[i], seen[i] = timestamptzElem(t.RegisteredAt()), timestamptzElem(t.LastSeenAt())
		}
		err := retryLostRace(ctx, r.db, func() error {
			_, err := r.db.Exec(ctx, `
			WITH input AS (
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
					AS i(token, user_id, platform, registered_at, last_seen_at)
			), registered AS (
				INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
				SELECT * FROM input
				ON CONFLICT (token) DO UPDATE SET
					user_id = excluded.user_id,
					platform = excluded.platform,
					last_seen_at = excluded.last_seen_at,
					registered_at = CASE WHEN herald_device_tokens.user_id = excluded.user_id
						THEN herald_device_tokens.registered_at ELSE excluded.registered_at END
				RETURNING 1
			), moving AS (
				-- The lock order (see the package documentation): the
				-- tokens' upsert runs to its end before the first delivery
				-- is read, and the deliveries are locked in id order, as a
				-- sender's record of outcomes locks its batch.
				SELECT d.id FROM input i
				JOIN herald_deliveries d ON d.token = i.token
				JOIN herald_notifications n ON n.id = d.notification_id
				WHERE `+openDeliveries+` AND n.audience IS NULL AND n.recipient <> i.user_id
					AND (SELECT count(*) FROM registered) >= 0
				ORDER BY d.id
				FOR UPDATE OF d
			)
			`+moveDeliveries+`
			FROM moving m
			WHERE d.id = m.id AND `+openDeliveries,
				tokens, users, platforms, registered, seen)
			return err
		})
		if err != nil {
			return fmt.Errorf("upsert device tokens: %w", err)
		}
	}
	return nil
}

func dedupeTokens(ts []*notification.DeviceToken) []*notification.DeviceToken {
	last := make(map[string]int, len(ts))
	for i, t := range ts {
		last[t.Token()] = i
	}
	if len(last) == len(ts) {
		return ts
	}
	out := make([]*notification.DeviceToken, 0, len(last))
	for i, t := range ts {
		if last[t.Token()] == i {
			out = append(out, t)
		}
	}
	return out
}

// Delete removes a token and reports whether it existed. In the same
// statement it closes the token's open deliveries (pending, retry
// scheduled, or claimed) token_pruned with the code TOKEN_REMOVED, as a
// claim does for a token that is gone: nothing is pushed to a token after
// its owner removed it, except a push a sender already had in hand (on the
// wire, or claimed too recently to be checked again: see the README's
// token ownership).
func (r *PostgresDeviceTokenRepository) Delete(ctx context.Context, token string) (bool, error) {
	if storableText(token) != token {
		// Text Postgres cannot hold (NUL, bytes that are not UTF-8) is no
		// stored token; asked, Postgres refuses the bytes with an error.
		return false, nil
	}
	var existed bool
	err := retryLostRace(ctx, r.db, func() error {
		return r.db.QueryRow(ctx, `
		WITH deleted AS (
			DELETE FROM herald_device_tokens WHERE token = $1 RETURNING 1
		), existed AS (
			SELECT count(*) AS n FROM deleted
		), closed AS (
			UPDATE herald_deliveries d SET status = 'token_pruned', claim_id = NULL, updated_at = now(),
				error_code = 'TOKEN_REMOVED', last_error = 'token removed from the registry before the push'
			WHERE d.token = $1 AND `+openDeliveries+`
				-- The token before its deliveries (the lock order, see the
				-- package documentation).
				AND (SELECT n FROM existed) >= 0
			RETURNING 1
		)
		SELECT (SELECT n FROM existed) > 0 FROM (SELECT count(*) FROM closed) c`, token).Scan(&existed)
	})
	if err != nil {
		return false, fmt.Errorf("delete device token: %w", err)
	}
	return existed, nil
}

// ListForUser returns a user's tokens, most recently seen first: at most
// limit of them, every one when limit is 0. A user id may hold any number
// of tokens; the operator's console lists a bounded page of them.
func (r *PostgresDeviceTokenRepository) ListForUser(ctx context.Context, userID string, limit int) ([]*notification.DeviceToken, error) {
	var max *int // NULL: LIMIT ALL
	if limit > 0 {
		max = &limit
	}
	rows, err := r.db.Query(ctx, `SELECT token, user_id, platform, registered_at, last_seen_at
		FROM herald_device_tokens WHERE user_id = $1 ORDER BY last_seen_at DESC, token LIMIT $2`, userID, max)
	if err != nil {
		return nil, fmt.Errorf("list device tokens: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*notification.DeviceToken, error) {
		var token, user, platform string
		var registered, seen time.Time
		if err := row.Scan(&token, &user, &platform, &registered, &seen); err != nil {
			return nil, err
		}
		return notification.DeviceTokenFromDatabase(user, token, notification.Platform(platform), registered, seen), nil
	})
	if err != nil {
		return nil, fmt.Errorf("list device tokens: %w", err)
	}
	return ts, nil
}
