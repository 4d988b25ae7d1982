package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// A host's table may hold on to one of Herald's rows (a foreign key
// without ON DELETE, a bug in the host app): the sweep of that table then
// fails at every run, but every other table is still swept, so that one
// row never makes all of Herald's tables grow without bound.
func TestARowHousekeepingCannotDeleteNeverStopsTheSweepOfTheOtherTables(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("ann", "stale-phone", notification.PlatformAndroid)
	_, err := f.pool.Exec(ctx, `UPDATE herald_device_tokens SET last_seen_at = now() - interval '3 years'`)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `CREATE TABLE host_devices (token text REFERENCES herald_device_tokens (token));
		INSERT INTO host_devices VALUES ('stale-phone')`)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_device_counts (device, minute_start, minute_count, hour_start, hour_count, granted)
		VALUES (1, now() - interval '2 hours', 1, now() - interval '2 hours', 1, 1)`)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at, read_at)
		VALUES (gen_random_uuid(), 'ann', 'test', 'old', now() - interval '2 days', now() - interval '2 days')`)
	require.NoError(t, err)

	hk, err := app.NewHousekeeper(adapters.NewPostgresHousekeepingRepository(f.pool),
		app.HousekeepingConfig{ReadRetention: 24 * time.Hour})
	require.NoError(t, err)
	report, err := hk.Sweep(ctx)
	assert.ErrorContains(t, err, "stale device tokens", "the failing sweep is reported")
	assert.Equal(t, 1, report.DeviceRates, "the tables after it are still swept")
	assert.Equal(t, 1, report.Notifications, "the tables after it are still swept")
	var kept int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_device_tokens`).Scan(&kept))
	assert.Equal(t, 1, kept, "the host's row keeps its token")
}
