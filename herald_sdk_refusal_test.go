package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// Options that decode but that the firebase SDK refuses to send (written
// into herald_notifications by a host's script, or taken by an older SDK)
// fail their one delivery at once, SDK_REJECTED, with one attempt: before,
// each was retried on the ladder as FCM unavailable until its attempts ran
// out. FCM, never asked, is not counted failing (a breaker opening at the
// first failure stays closed), and the other deliveries go out.
func TestOptionsTheSDKRefusesFailTheirDeliveryAtOnceAndNothingElse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := fastConfig()
	cfg.FCM.BreakerFailures = 1
	h := newHarness(t, cfg)
	h.register("mallory", "mallory-phone", notification.PlatformAndroid)
	h.register("author", "author-phone", notification.PlatformAndroid)
	bad := h.raise(true, comment("m1", "ann", "mallory"))[0]
	good := h.raise(true, comment("m2", "ann", "author"))[0]
	_, err := h.pool.Exec(ctx, `UPDATE herald_notifications SET options = '{"android": {"priority": "urgent"}}' WHERE id = $1`, bad.ID())
	require.NoError(t, err)
	h.run()

	h.waitStatuses(good, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	h.waitStatuses(bad, map[notification.DeliveryStatus]int{notification.StatusFailed: 1}, 10*time.Second)
	d := h.deliveryFor(bad, "mallory-phone")
	require.NotNil(t, d)
	assert.Equal(t, "SDK_REJECTED", d.ErrorCode())
	assert.Equal(t, 1, d.Attempts(), "the refused push was retried")
	assert.Contains(t, d.LastError(), "priority must be 'normal' or 'high'")
	assert.True(t, h.tokenExists("mallory-phone"), "the token is kept")
	assert.Empty(t, h.fake.AcceptedFor("mallory-phone"))
	assert.Equal(t, "closed", h.herald.Stats().Breaker)
	assert.Zero(t, h.herald.Stats().Sender.RetriesScheduled)

	// Sending goes on.
	next := h.raise(true, comment("m3", "ann", "author"))[0]
	h.waitStatuses(next, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
}
