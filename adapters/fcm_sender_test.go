package adapters_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func newSender(t testing.TB, cfg adapters.FCMSenderConfig) (*testutil.FakeFCM, *adapters.FCMSender) {
	t.Helper()
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := adapters.NewFCMClient(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	sender, err := adapters.NewFCMSender(client, cfg)
	require.NoError(t, err)
	return fake, sender
}

func message(token string) notification.Message {
	return notification.Message{Token: token, Content: notification.Content{Title: "t", Body: "b", TTL: time.Hour}}
}

func TestFCMSenderClassifiesEveryErrorClass(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fault      testutil.FaultCode
		class      error
		code       string
		countsFCM  bool
		retryAfter time.Duration
	}{
		{testutil.FaultUnregistered, notification.ErrTokenUnregistered, "UNREGISTERED", false, 0},
		{testutil.FaultInvalidToken, notification.ErrTokenRejected, "INVALID_ARGUMENT", false, 0},
		{testutil.FaultInvalidMessage, notification.ErrMessageRejected, "INVALID_ARGUMENT", false, 0},
		{testutil.FaultQuotaExceeded, notification.ErrQuotaExceeded, "QUOTA_EXCEEDED", false, 3 * time.Second},
		{testutil.FaultInternal, notification.ErrProviderUnavailable, "INTERNAL", true, 0},
		{testutil.FaultSenderIDMismatch, notification.ErrMisconfigured, "SENDER_ID_MISMATCH", false, 0},
		{testutil.FaultThirdPartyAuth, notification.ErrMisconfigured, "THIRD_PARTY_AUTH_ERROR", false, 0},
		{testutil.FaultUnauthenticated, notification.ErrMisconfigured, "UNAUTHENTICATED", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			t.Parallel()
			fake, sender := newSender(t, adapters.FCMSenderConfig{})
			fake.FailToken("tok", testutil.Fault{Code: tt.fault, RetryAfter: tt.retryAfter})
			_, err := sender.Push(context.Background(), message("tok"))
			var se *notification.SendError
			require.ErrorAs(t, err, &se)
			assert.ErrorIs(t, err, tt.class)
			assert.Equal(t, tt.code, se.Code)
			assert.Equal(t, tt.countsFCM, se.CountsAgainstProvider)
			assert.Equal(t, tt.retryAfter, se.RetryAfter)
		})
	}
}

func TestFCMSenderTimeoutIsTransient(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{SendTimeout: 200 * time.Millisecond})
	fake.FailAll(testutil.Fault{Code: testutil.FaultHang})
	_, err := sender.Push(context.Background(), message("tok"))
	var se *notification.SendError
	require.ErrorAs(t, err, &se)
	assert.ErrorIs(t, err, notification.ErrProviderUnavailable)
	assert.True(t, se.CountsAgainstProvider)
}

func TestFCMSenderSendsTheMessage(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{})
	msg := message("tok")
	msg.Data = map[string]string{"k": "v"}
	name, err := sender.Push(context.Background(), msg)
	require.NoError(t, err)
	got := fake.AcceptedFor("tok")
	require.Len(t, got, 1)
	assert.Equal(t, got[0].Name, name)
	assert.Equal(t, "t", got[0].Title)
	assert.Equal(t, "v", got[0].Data["k"])
	assert.Equal(t, "3600s", got[0].TTL)
}

func TestBreakerIgnoresDeadTokensButOpensOnOutage(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 3, BreakerOpenFor: time.Minute})
	fake.FailAll(testutil.Fault{Code: testutil.FaultUnregistered})
	for range 10 {
		_, err := sender.Push(context.Background(), message("dead"))
		require.ErrorIs(t, err, notification.ErrTokenUnregistered)
	}
	assert.Equal(t, "closed", sender.BreakerState(), "dead tokens are FCM working, not failing")

	fake.FailAll(testutil.Fault{Code: testutil.FaultInternal})
	for range 3 {
		_, err := sender.Push(context.Background(), message("tok"))
		require.ErrorIs(t, err, notification.ErrProviderUnavailable)
	}
	assert.Equal(t, "open", sender.BreakerState())
	before := fake.Requests()
	_, err := sender.Push(context.Background(), message("tok"))
	require.ErrorIs(t, err, notification.ErrCircuitOpen)
	assert.Equal(t, before, fake.Requests(), "an open breaker sends nothing")
}

func TestColdBurstUsesOneConnection(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{})
	var wg sync.WaitGroup
	errs := make(chan error, 128)
	for i := range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := sender.Push(context.Background(), message(fmt.Sprintf("tok-%d", i))); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	require.NoError(t, errors.Join(func() []error {
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		return all
	}()...))
	assert.Equal(t, int64(128), fake.AcceptedCount())
	assert.LessOrEqual(t, fake.Connections(), int64(2))
}

func TestOpeningBreakerCancelsTheSDKsOwnRetries(t *testing.T) {
	t.Parallel()
	// The breaker judges every attempt: the slow push's two 503s and the
	// fast push's 500 make three.
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 3, BreakerOpenFor: time.Minute})
	fake.FailToken("slow", testutil.Fault{Code: testutil.FaultUnavailable}) // the SDK retries 503 by itself
	fake.FailToken("fast", testutil.Fault{Code: testutil.FaultInternal})    // the SDK does not retry 500
	_, err := sender.Push(context.Background(), message("warm-up"))
	require.NoError(t, err)

	slow := make(chan error, 1)
	go func() {
		_, err := sender.Push(context.Background(), message("slow"))
		slow <- err
	}()
	require.Eventually(t, func() bool { return fake.Requests() >= 3 }, 5*time.Second, time.Millisecond,
		"the SDK has sent the 503'd push and its immediate retry")
	_, err = sender.Push(context.Background(), message("fast"))
	require.ErrorIs(t, err, notification.ErrProviderUnavailable)
	// The slow push's retry may still be on its way back when the fast
	// one's answer is judged: the third failure opens the breaker either way.
	require.Eventually(t, func() bool { return sender.BreakerState() == "open" }, 2*time.Second, time.Millisecond)
	opened := fake.Requests()

	select {
	case err := <-slow:
		// Cancelled by Herald's own breaker: released, not an attempt.
		require.ErrorIs(t, err, notification.ErrCircuitOpen)
	case <-time.After(3 * time.Second):
		t.Fatal("the push in flight was not cancelled when the breaker opened")
	}
	time.Sleep(1500 * time.Millisecond) // past the SDK's next retry, had it not been cancelled
	assert.Equal(t, opened, fake.Requests(), "no retry reached FCM while the breaker was open")
}
