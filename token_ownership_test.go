package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// A phone changes hands: Alice's delivery to it is waiting for a retry when
// the phone is registered to Bob. Bob's phone must never show Alice's push.
func TestATokenThatChangesOwnerNeverReceivesThePreviousOwnersPush(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name          string
		aliceSignsOut bool
		status        notification.DeliveryStatus
		code          string
	}{
		{"registered to bob straight away", false, notification.StatusTokenMoved, "TOKEN_MOVED"},
		{"alice unregisters, then bob registers", true, notification.StatusTokenPruned, "TOKEN_REMOVED"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := fastConfig()
			// The retry comes due seconds after the failure: long after the
			// phone changed hands.
			cfg.Sender.Retry = notification.RetryPolicy{MaxAttempts: 4, BaseDelay: 2 * time.Second, MaxDelay: 2 * time.Second}
			h := newHarness(t, cfg)
			const phone = "shared-phone"
			require.NoError(t, h.herald.Tokens().Register(ctx, "alice", phone, notification.PlatformAndroid))
			h.fake.FailToken(phone, testutil.Fault{Code: testutil.FaultInternal, Times: 1})
			h.run()

			forAlice := h.raise(true, comment("for-alice", "ann", "alice"))[0]
			h.waitStatuses(forAlice, map[notification.DeliveryStatus]int{notification.StatusRetryScheduled: 1}, 10*time.Second)

			if tt.aliceSignsOut {
				require.NoError(t, h.herald.Tokens().Unregister(ctx, phone))
			}
			require.NoError(t, h.herald.Tokens().Register(ctx, "bob", phone, notification.PlatformAndroid))
			h.waitStatuses(forAlice, map[notification.DeliveryStatus]int{tt.status: 1}, 10*time.Second)
			d := h.deliveryFor(forAlice, phone)
			assert.Equal(t, tt.code, d.ErrorCode())

			// Bob's own notification reaches the phone; it proves the sender
			// ran past the time Alice's retry came due.
			time.Sleep(cfg.Sender.Retry.BaseDelay)
			forBob := h.raise(true, comment("for-bob", "ann", "bob"))[0]
			testutil.WaitDelivered(t, h.pool, forBob.ID(), 10*time.Second)
			testutil.WaitIdle(t, h.pool, 10*time.Second)
			got := h.fake.AcceptedFor(phone)
			require.Len(t, got, 1, "only bob's push reached bob's phone")
			assert.Equal(t, "for-bob", got[0].Data["comment_id"])
			assert.Equal(t, map[notification.DeliveryStatus]int{tt.status: 1}, h.statuses(forAlice), "still closed")
		})
	}
}

// An operator retrying failed deliveries must not send a failed push to a
// phone that has since been registered to someone else.
func TestAnOperatorRetryNeverPushesToATokenThatChangedOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	const phone, tablet = "alice-phone", "alice-tablet"
	for _, tok := range []string{phone, tablet} {
		require.NoError(t, h.herald.Tokens().Register(ctx, "alice", tok, notification.PlatformAndroid))
		h.fake.FailToken(tok, testutil.Fault{Code: testutil.FaultInvalidMessage})
	}
	h.run()
	forAlice := h.raise(true, comment("for-alice", "ann", "alice"))[0]
	h.waitStatuses(forAlice, map[notification.DeliveryStatus]int{notification.StatusFailed: 2}, 10*time.Second)

	// The phone changes hands while the deliveries sit failed; then the
	// operator fixes the configuration and retries everything.
	require.NoError(t, h.herald.Tokens().Register(ctx, "bob", phone, notification.PlatformAndroid))
	h.fake.ClearFaults()
	retried, err := h.herald.RetryAllFailed(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, retried)

	h.waitStatuses(forAlice, map[notification.DeliveryStatus]int{
		notification.StatusSent: 1, notification.StatusTokenMoved: 1}, 10*time.Second)
	assert.Equal(t, notification.StatusSent, h.deliveryFor(forAlice, tablet).Status(), "alice's own device still gets it")
	assert.Equal(t, "TOKEN_MOVED", h.deliveryFor(forAlice, phone).ErrorCode())
	testutil.WaitIdle(t, h.pool, 10*time.Second)
	assert.Empty(t, h.fake.AcceptedFor(phone), "bob's phone got nothing of alice's")

	// Retrying again cannot resurrect a moved delivery.
	retried, err = h.herald.RetryAllFailed(ctx)
	require.NoError(t, err)
	assert.Zero(t, retried)
}
