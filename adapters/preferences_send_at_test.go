package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// A scheduled push whose send time falls in the recipient's quiet hours
// waits for their end; when the recipient then changes or drops their
// quiet hours, it is brought forward to its send time, never before it.
func TestChangingQuietHoursNeverBringsAScheduledPushBeforeItsSendTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, change := range map[string]func(*adapters.PostgresPreferenceRepository) error{
		"quiet hours dropped": func(r *adapters.PostgresPreferenceRepository) error {
			return r.Set(ctx, "minji", notification.Preferences{TimeZone: "UTC"}, time.Now())
		},
		"preferences deleted": func(r *adapters.PostgresPreferenceRepository) error {
			_, err := r.Delete(ctx, "minji")
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newOwnershipFixture(t)
			prefs := adapters.NewPostgresPreferenceRepository(f.pool)
			f.register("minji", "minji-phone", notification.PlatformAndroid)
			var dbNow time.Time
			require.NoError(t, f.pool.QueryRow(ctx, `SELECT now()`).Scan(&dbNow))
			dbNow = dbNow.UTC()
			// Quiet from an hour from now to three hours from now (UTC).
			clock := func(d time.Duration) string { return dbNow.Add(d).Format("15:04") }
			require.NoError(t, prefs.Set(ctx, "minji", notification.Preferences{TimeZone: "UTC",
				QuietHours: notification.QuietHours{Start: clock(time.Hour), End: clock(3 * time.Hour)}}, time.Now()))
			sendAt := dbNow.Add(2 * time.Hour)
			id := uuid.New()
			_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at, send_at)
				VALUES ($1, 'minji', 'reminder', 'Class at 9', now(), $2)`, id, sendAt)
			require.NoError(t, err)
			_, err = f.repo.Expand(ctx, []uuid.UUID{id})
			require.NoError(t, err)
			var due time.Time
			var code string
			require.NoError(t, f.pool.QueryRow(ctx, `SELECT due_at, error_code FROM herald_deliveries
				WHERE notification_id = $1`, id).Scan(&due, &code))
			require.Equal(t, "QUIET_HOURS", code)
			require.True(t, due.After(sendAt), "held past its send time by the quiet hours")

			require.NoError(t, change(prefs))
			require.NoError(t, f.pool.QueryRow(ctx, `SELECT due_at FROM herald_deliveries
				WHERE notification_id = $1`, id).Scan(&due))
			assert.False(t, due.Before(sendAt), "due %s, before its send time %s", due, sendAt)
			ds, err := f.repo.ClaimDue(ctx, time.Now(), 10, time.Minute)
			require.NoError(t, err)
			assert.Empty(t, ds, "nothing pushed before its send time")
		})
	}
}

// Set checks the time zone against Postgres's zone database as the claim
// reads it, a zone name, never an abbreviation: one it does not know is
// refused before anything is stored, and CET (an abbreviation too) is a
// zone.
func TestAZonePostgresDoesNotKnowIsRefusedBeforeAnythingIsStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	prefs := adapters.NewPostgresPreferenceRepository(f.pool)
	quiet := notification.QuietHours{Start: "22:00", End: "07:00"}
	for _, zone := range []string{"Mars/Olympus", "Atlantis"} {
		err := prefs.Set(ctx, "minji", notification.Preferences{QuietHours: quiet, TimeZone: zone}, time.Now())
		var fe *notification.FieldError
		require.ErrorAs(t, err, &fe, zone)
		assert.ErrorIs(t, err, notification.ErrInvalidTimeZone, zone)
	}
	_, stored, err := prefs.Get(ctx, "minji")
	require.NoError(t, err)
	assert.False(t, stored)

	require.NoError(t, prefs.Set(ctx, "minji", notification.Preferences{QuietHours: quiet, TimeZone: "CET"}, time.Now()))
	got, _, err := prefs.Get(ctx, "minji")
	require.NoError(t, err)
	assert.Equal(t, "CET", got.TimeZone)
}
