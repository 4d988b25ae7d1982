package adapters

import (
	"context"
	"fmt"
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
	if db == nil {
		panic("adapters: nil db")
	}
	return &PostgresDeviceTokenRepository{db: db}
}

// Upsert registers t: a new token is inserted; a known token is marked seen
// and moves to t's user (its registration time restarts when it moves).
func (r *PostgresDeviceTokenRepository) Upsert(ctx context.Context, t *notification.DeviceToken) error {
	_, err := r.db.Exec(ctx, `
		INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (token) DO UPDATE SET
			user_id = excluded.user_id,
			platform = excluded.platform,
			last_seen_at = excluded.last_seen_at,
			registered_at = CASE WHEN herald_device_tokens.user_id = excluded.user_id
				THEN herald_device_tokens.registered_at ELSE excluded.registered_at END`,
		t.Token(), t.UserID(), string(t.Platform()), t.RegisteredAt(), t.LastSeenAt())
	if err != nil {
		return fmt.Errorf("upsert device token: %w", err)
	}
	return nil
}

// UpsertMany registers many tokens in one statement per chunk; the last
// occurrence of a repeated token wins.
func (r *PostgresDeviceTokenRepository) UpsertMany(ctx context.Context, ts []*notification.DeviceToken) error {
	for start := 0; start < len(ts); start += insertChunk {
		chunk := dedupeTokens(ts[start:min(start+insertChunk, len(ts))])
		tokens, users, platforms := make([]string, len(chunk)), make([]string, len(chunk)), make([]string, len(chunk))
		registered, seen := make([]time.Time, len(chunk)), make([]time.Time, len(chunk))
		for i, t := range chunk {
			tokens[i], users[i], platforms[i] = t.Token(), t.UserID(), string(t.Platform())
			registered[i], seen[i] = t.RegisteredAt(), t.LastSeenAt()
		}
		_, err := r.db.Exec(ctx, `
			INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
			ON CONFLICT (token) DO UPDATE SET
				user_id = excluded.user_id,
				platform = excluded.platform,
				last_seen_at = excluded.last_seen_at,
				registered_at = CASE WHEN herald_device_tokens.user_id = excluded.user_id
					THEN herald_device_tokens.registered_at ELSE excluded.registered_at END`,
			tokens, users, platforms, registered, seen)
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

// Delete removes a token and reports whether it existed.
func (r *PostgresDeviceTokenRepository) Delete(ctx context.Context, token string) (bool, error) {
	tag, err := r.db.Exec(ctx, `DELETE FROM herald_device_tokens WHERE token = $1`, token)
	if err != nil {
		return false, fmt.Errorf("delete device token: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// ListForUser returns a user's tokens, most recently seen first.
func (r *PostgresDeviceTokenRepository) ListForUser(ctx context.Context, userID string) ([]*notification.DeviceToken, error) {
	rows, err := r.db.Query(ctx, `SELECT token, user_id, platform, registered_at, last_seen_at
		FROM herald_device_tokens WHERE user_id = $1 ORDER BY last_seen_at DESC, token`, userID)
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

// DeleteSeenBefore removes tokens last seen before cutoff, at most limit
// per call (so a sweep never holds a long transaction), and returns how many
// it removed.
func (r *PostgresDeviceTokenRepository) DeleteSeenBefore(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	tag, err := r.db.Exec(ctx, `DELETE FROM herald_device_tokens WHERE token IN (
		SELECT token FROM herald_device_tokens WHERE last_seen_at < $1 LIMIT $2)`, cutoff, limit)
	if err != nil {
		return 0, fmt.Errorf("delete stale device tokens: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
