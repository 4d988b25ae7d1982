package adapters

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/herald-push/herald/notification"
)

// PostgresPreferenceRepository stores users' push preferences in
// herald_preferences, which the relay reads when it expands a notification
// and the claim reads again just before each push.
type PostgresPreferenceRepository struct {
	db DB
}

// NewPostgresPreferenceRepository returns a repository on db.
func NewPostgresPreferenceRepository(db DB) *PostgresPreferenceRepository {
	return &PostgresPreferenceRepository{db: requireDB(db)}
}

// Set stores p as userID's preferences, replacing any, in one statement
// that also checks the time zone against Postgres's zone database (a zone
// Go knows but Postgres does not fails with a *notification.FieldError
// wrapping notification.ErrInvalidTimeZone) and brings forward the user's
// open deliveries waiting for quiet hours to end, so that the claim judges
// them by the new preferences: shorter or no quiet hours take effect at
// once (a scheduled push still waits for its send time).
func (r *PostgresPreferenceRepository) Set(ctx context.Context, userID string, p notification.Preferences, at time.Time) error {
	tz := p.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	var start, end *string
	if !p.QuietHours.IsZero() {
		start, end = &p.QuietHours.Start, &p.QuietHours.End
	}
	muted := p.Muted
	if muted == nil {
		muted = []string{}
	}
	_, err := r.db.Exec(ctx, `
		WITH stored AS (
			INSERT INTO herald_preferences AS p (user_id, muted, quiet_start, quiet_end, time_zone, updated_at)
			-- Read as the claim reads it (migration 0016): a zone
			-- Postgres's zone database does not know fails.
			SELECT $1, $2, $3::time, $4::time, $5, $6
			WHERE herald_quiet_until_strict(now(), $5, '00:00', '12:00') IS NOT NULL
			ON CONFLICT (user_id) DO UPDATE SET muted = excluded.muted, quiet_start = excluded.quiet_start,
				quiet_end = excluded.quiet_end, time_zone = excluded.time_zone, updated_at = excluded.updated_at
			RETURNING 1
		)
		UPDATE herald_deliveries d SET `+wakeFromQuietHours+`
		FROM herald_device_tokens t, herald_notifications n
		WHERE t.user_id = $1 AND d.token = t.token AND d.error_code = 'QUIET_HOURS'
			AND d.status IN ('pending', 'retry_scheduled') AND d.due_at > now()
			AND n.id = d.notification_id AND EXISTS (SELECT 1 FROM stored)`,
		userID, muted, start, end, tz, at)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "22023" {
		return &notification.FieldError{Field: "time_zone", Err: notification.ErrInvalidTimeZone}
	}
	if err != nil {
		return fmt.Errorf("store preferences: %w", err)
	}
	return nil
}

// wakeFromQuietHours brings forward a delivery (d) held by quiet hours so
// the claim judges it by the new preferences: due now, or at its
// notification's (n) send time if that is later, for quiet hours may hold a
// scheduled push past its send time, and the claim does not test the send
// time again. One waiting for its send time no longer says QUIET_HOURS.
const wakeFromQuietHours = `due_at = greatest(now(), n.send_at), updated_at = now(),
	error_code = CASE WHEN n.send_at > now() THEN '' ELSE d.error_code END,
	last_error = CASE WHEN n.send_at > now() THEN '' ELSE d.last_error END`

// Get returns userID's preferences, and false if they have none.
func (r *PostgresPreferenceRepository) Get(ctx context.Context, userID string) (notification.Preferences, bool, error) {
	var (
		p          notification.Preferences
		start, end *string
	)
	err := r.db.QueryRow(ctx, `SELECT muted,
			to_char(quiet_start, CASE WHEN extract(second FROM quiet_start) = 0 THEN 'HH24:MI' ELSE 'HH24:MI:SS' END),
			to_char(quiet_end, CASE WHEN extract(second FROM quiet_end) = 0 THEN 'HH24:MI' ELSE 'HH24:MI:SS' END),
			time_zone
		FROM herald_preferences WHERE user_id = $1`, userID).Scan(&p.Muted, &start, &end, &p.TimeZone)
	if errors.Is(err, pgx.ErrNoRows) {
		return notification.Preferences{}, false, nil
	}
	if err != nil {
		return notification.Preferences{}, false, fmt.Errorf("read preferences: %w", err)
	}
	if start != nil && end != nil {
		p.QuietHours = notification.QuietHours{Start: *start, End: *end}
	}
	if len(p.Muted) == 0 {
		p.Muted = nil
	}
	return p, true, nil
}

// Delete removes userID's preferences (pushes go out at once, nothing
// muted) and brings forward their deliveries waiting for quiet hours. It
// reports whether they had any.
func (r *PostgresPreferenceRepository) Delete(ctx context.Context, userID string) (bool, error) {
	var deleted bool
	err := r.db.QueryRow(ctx, `
		WITH gone AS (DELETE FROM herald_preferences WHERE user_id = $1 RETURNING 1), woken AS (
			UPDATE herald_deliveries d SET `+wakeFromQuietHours+`
			FROM herald_device_tokens t, herald_notifications n
			WHERE t.user_id = $1 AND d.token = t.token AND d.error_code = 'QUIET_HOURS'
				AND d.status IN ('pending', 'retry_scheduled') AND d.due_at > now()
				AND n.id = d.notification_id AND EXISTS (SELECT 1 FROM gone)
		)
		SELECT EXISTS (SELECT 1 FROM gone)`, userID).Scan(&deleted)
	if err != nil {
		return false, fmt.Errorf("delete preferences: %w", err)
	}
	return deleted, nil
}
