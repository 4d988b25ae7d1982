package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

// When the breaker opens, a push whose request FCM is already answering
// must keep that answer: cancelling it would lose an acceptance, and the
// delivery, released, would be pushed a second time later.
func TestAPushOnTheWireWhenTheBreakerOpensIsAcceptedOnceNotSentTwice(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 3, BreakerOpenFor: time.Minute})
	_, err := sender.Push(context.Background(), message("warm-up"))
	require.NoError(t, err)
	// FCM is slow for this one and accepts it.
	fake.FailToken("accepted-slowly", testutil.Fault{Code: testutil.FaultNone, Latency: 700 * time.Millisecond})
	for _, tok := range []string{"broken-1", "broken-2", "broken-3"} {
		fake.FailToken(tok, testutil.Fault{Code: testutil.FaultInternal}) // not retried by the SDK
	}

	slow := make(chan error, 1)
	go func() {
		_, err := sender.Push(context.Background(), message("accepted-slowly"))
		slow <- err
	}()
	require.Eventually(t, func() bool { return fake.Requests() >= 2 }, 5*time.Second, time.Millisecond,
		"the slow push is on the wire")
	for _, tok := range []string{"broken-1", "broken-2", "broken-3"} {
		_, _ = sender.Push(context.Background(), message(tok))
	}
	require.Equal(t, "open", sender.BreakerState(), "three failures open the breaker while the slow push is out")

	select {
	case err := <-slow:
		require.NoError(t, err, "FCM accepted it: the push reports it sent")
	case <-time.After(5 * time.Second):
		t.Fatal("the push on the wire never came back")
	}
	assert.Len(t, fake.AcceptedFor("accepted-slowly"), 1)
}
