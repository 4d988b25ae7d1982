package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// An empty token written straight into the token table (Register refuses
// it with ErrInvalidToken) was expanded like any other: the FCM SDK refuses
// a message without a token before any request, which the sender read as
// FCM unavailable, so the delivery was retried through the whole ladder and
// failed with "provider unavailable" and no code, for every notification
// of that user, and the token was never pruned. Broadcasts already skipped
// it; personal expansion now does too, as it skips overlong tokens.
func TestAnEmptyTokenWrittenStraightIntoTheTableIsNeverExpandedSoNoPushFailsAsProviderUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 1)
	require.ErrorIs(t, h.herald.Tokens().Register(ctx, "author", "", notification.PlatformAndroid), notification.ErrInvalidToken)
	_, err := h.pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		VALUES ('', 'author', 'android', now(), now())`)
	require.NoError(t, err)
	h.run()

	n := h.raise(true, comment("m1", "ann", "author"))[0]
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 15*time.Second)
	h.waitIdle(10 * time.Second)
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, h.statuses(n))
}
