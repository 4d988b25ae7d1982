package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func TestHousekeepingRemovesWhatIsNoLongerNeeded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 2)
	h.fake.FailToken("author-device-0001", testutil.Fault{Code: testutil.FaultInvalidMessage})
	h.run()
	first := h.raise(true, comment("m1", "ann", "author"))[0]
	h.waitStatuses(first, map[notification.DeliveryStatus]int{notification.StatusSent: 1, notification.StatusFailed: 1}, 10*time.Second)
	testutil.WaitIdle(t, h.pool, 10*time.Second)

	count := func(table string) int {
		var n int
		require.NoError(t, h.pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n))
		return n
	}
	require.Equal(t, 1, count("watermill_herald_outbox"))
	require.Equal(t, 1, count("herald_delivery_attempts"), "the failed attempt is logged, the sent one is not")

	// Eight days later (ages are measured on the database's clock, so the
	// rows are made older): sent deliveries and consumed outbox rows go,
	// failed deliveries (kept 30 days) and recently seen tokens stay.
	age := func(by string) {
		for _, stmt := range []string{
			`UPDATE herald_deliveries SET updated_at = updated_at - $1::interval`,
			`UPDATE watermill_herald_outbox SET created_at = created_at - $1::interval`,
			`UPDATE herald_device_tokens SET last_seen_at = last_seen_at - $1::interval`,
		} {
			_, err := h.pool.Exec(ctx, stmt, by)
			require.NoError(t, err)
		}
	}
	age("8 days")
	hk, err := app.NewHousekeeper(adapters.NewPostgresHousekeepingRepository(h.pool), app.HousekeepingConfig{BatchSize: 1})
	require.NoError(t, err)
	report, err := hk.Sweep(ctx)
	require.NoError(t, err)
	assert.Equal(t, app.HousekeepingReport{OutboxRows: 1, Deliveries: 1}, report)
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusFailed: 1}, h.statuses(first))
	assert.Zero(t, count("watermill_herald_outbox"))
	assert.Equal(t, 2, count("herald_device_tokens"))
	assert.Equal(t, 1, count("herald_notifications"), "the inbox is the host's to keep")

	// The relay carries on after its consumed rows are gone.
	h.fake.ClearFaults()
	second := h.raise(true, comment("m2", "ann", "author"))[0]
	testutil.WaitDelivered(t, h.pool, second.ID(), 10*time.Second)

	// A year on, the tokens have expired too.
	age("365 days")
	report, err = hk.Sweep(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, report.Tokens)
	assert.Zero(t, count("herald_device_tokens"))
	assert.Zero(t, count("herald_deliveries"))
	assert.Zero(t, count("herald_delivery_attempts"), "attempts go with their deliveries")
}
