package herald_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/herald-push/herald/notification"
)

// One clock: whether a notification has expired is the database's
// business, like every due time. A sender whose clock runs minutes ahead
// must not close as expired a push whose notification still has minutes to
// live (by the database's clock); it measures what remains with its own
// clock, as it does a lease.
func TestASendersClockMinutesAheadNeverExpiresAPushThatStillHasTimeToLive(t *testing.T) {
	t.Parallel()
	for _, skew := range []time.Duration{5 * time.Minute, -5 * time.Minute} {
		t.Run(skew.String(), func(t *testing.T) {
			t.Parallel()
			cfg := fastConfig()
			h := newDraftHarness(t, cfg) // the host that raises, on a right clock; it does not send
			h.register("u", "tok-a", notification.PlatformAndroid)
			d := draft("u", "your ride is here")
			d.ExpiresAt = time.Now().Add(3 * time.Minute)
			n := h.notify(d)

			// The only sending server's clock is off by skew.
			h.replica(cfg, skew).run()

			h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 15*time.Second)
			assert.Len(t, h.fake.AcceptedFor("tok-a"), 1)
		})
	}
}
