package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
)

// The send budget's row is read by every grant of every instance: tokens,
// times or a pause no grant would write never stop the fleet's sending
// for more than a moment, nor fail the grant.
func TestABudgetRowNoGrantWroteNeverFreezesTheFleetsSending(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, sql string }{
		{"tokens at minus infinity", `UPDATE herald_send_budget SET tokens = '-Infinity'`},
		{"a debt of a trillion tokens", `UPDATE herald_send_budget SET tokens = -1e12`},
		{"a debt of a million tokens", `UPDATE herald_send_budget SET tokens = -1e6`},
		{"tokens that are not a number", `UPDATE herald_send_budget SET tokens = 'NaN'`},
		{"tokens at infinity", `UPDATE herald_send_budget SET tokens = 'Infinity'`},
		{"refilled at infinity", `UPDATE herald_send_budget SET tokens = 0, refilled_at = 'infinity'`},
		{"refilled a year ahead", `UPDATE herald_send_budget SET tokens = 0, refilled_at = now() + interval '1 year'`},
		{"refilled at minus infinity", `UPDATE herald_send_budget SET refilled_at = '-infinity'`},
		{"paused for ever", `UPDATE herald_send_budget SET paused_until = 'infinity'`},
		{"paused for a thousand years", `UPDATE herald_send_budget SET paused_until = now() + interval '1000 years'`},
		{"paused since minus infinity", `UPDATE herald_send_budget SET paused_until = '-infinity'`},
		{"deleted", `DELETE FROM herald_send_budget`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := newOwnershipFixture(t)
			fleet := adapters.NewPostgresFleetRepository(f.pool)
			_, err := f.pool.Exec(ctx, tc.sql)
			require.NoError(t, err)
			status, err := adapters.NewPostgresStatusRepository(f.pool).Status(ctx)
			require.NoError(t, err, "the status reads the row")
			assert.LessOrEqual(t, status.QuotaPause, 24*time.Hour)
			const perSecond, capacity = 1000.0, 10.0
			total := 0
			deadline := time.Now().Add(2 * time.Second)
			for total < 20 && time.Now().Before(deadline) {
				got, pause, err := fleet.Grant(ctx, 5, perSecond, capacity)
				require.NoError(t, err, "the grant works")
				assert.LessOrEqual(t, pause, 24*time.Hour, "no pause longer than Herald sets")
				assert.GreaterOrEqual(t, pause, time.Duration(0))
				assert.LessOrEqual(t, got, 5)
				total += got
				time.Sleep(10 * time.Millisecond)
			}
			assert.GreaterOrEqual(t, total, 20, "the budget refills")
			_, pause, err := fleet.Grant(ctx, 0, perSecond, capacity)
			require.NoError(t, err)
			assert.Zero(t, pause, "the fleet is not paused")
			require.NoError(t, fleet.PauseAll(ctx, 3*time.Second), "a pause can be set")
			_, pause, err = fleet.Grant(ctx, 0, perSecond, capacity)
			require.NoError(t, err)
			assert.InDelta(t, 3*time.Second, pause, float64(time.Second), "and is read by every instance")
		})
	}
}
