package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// A push already claimed, waiting its turn behind the rate limit, must not
// go out once its phone has been registered to someone else: the claim is
// checked again just before the push.
func TestAPushWaitingInTheQueueNeverReachesAPhoneThatChangedOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := fastConfig()
	cfg.Sender.Lease = time.Minute
	cfg.Sender.RatePerMinute = 60 // one a second: all six are claimed at once and wait their turn
	h := newHarness(t, cfg)
	tokens := h.registerTokens("alice", 6)
	h.run()
	forAlice := h.raise(true, comment("for-alice", "ann", "alice"))[0]
	require.Eventually(t, func() bool { return h.fake.AcceptedCount() >= 1 }, 10*time.Second, 5*time.Millisecond)
	// One of the phones whose push still waits in the queue changes hands.
	var phone string
	for _, tok := range tokens {
		if len(h.fake.AcceptedFor(tok)) == 0 {
			phone = tok
			break
		}
	}
	require.NoError(t, h.herald.Tokens().Register(ctx, "bob", phone, notification.PlatformAndroid))
	require.Empty(t, h.fake.AcceptedFor(phone), "the push was still waiting when the phone moved")

	h.waitStatuses(forAlice, map[notification.DeliveryStatus]int{
		notification.StatusSent: 5, notification.StatusTokenMoved: 1}, 20*time.Second)
	time.Sleep(time.Second) // a push misdirected at the last moment would show by now
	assert.Empty(t, h.fake.AcceptedFor(phone), "bob's phone got alice's push")
	assert.Equal(t, int64(5), h.fake.AcceptedCount())
}
