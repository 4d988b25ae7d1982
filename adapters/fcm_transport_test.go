package adapters_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// pushUntilSent pushes msg until it is sent or ctx ends, pausing like the
// sender does when the breaker refuses.
func pushUntilSent(ctx context.Context, sender *adapters.FCMSender, msg notification.Message) error {
	for {
		_, err := sender.Push(context.Background(), msg)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not sent in time: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestAnFCMOutageIsHitByAFewDozenRequestsNotByEveryWorkersRetries(t *testing.T) {
	t.Parallel()
	const workers = 128
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerOpenFor: 500 * time.Millisecond, SendTimeout: 10 * time.Second})
	fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable}) // the SDK retries each 503 up to 4 times

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pushUntilSent(ctx, sender, message(fmt.Sprintf("tok-%d", i))); err != nil {
				errs <- err
			}
		}()
	}
	require.Eventually(t, func() bool { return sender.BreakerState() == "open" }, 5*time.Second, time.Millisecond)
	time.Sleep(3 * time.Second) // the outage goes on; probes are refused
	during := fake.Requests()
	t.Logf("requests during the outage: %d", during)
	fake.ClearFaults()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.LessOrEqual(t, during, int64(50), "requests that reached the failing FCM")
	assert.Equal(t, int64(workers), fake.AcceptedCount(), "every push is sent once FCM is back")
}

func TestAFailingProbeReopensTheBreakerAtOnce(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 2, BreakerOpenFor: 200 * time.Millisecond, BreakerProbes: 3})
	fake.FailAll(testutil.Fault{Code: testutil.FaultInternal})
	for range 2 {
		_, err := sender.Push(context.Background(), message("tok"))
		require.ErrorIs(t, err, notification.ErrProviderUnavailable)
	}
	require.Equal(t, "open", sender.BreakerState())
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, "half-open", sender.BreakerState())
	// The probe gets a 503, which the SDK would retry up to 4 times over
	// 7 s: its first answer reopens the breaker and its retries never go.
	fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable})
	before := fake.Requests()
	_, err := sender.Push(context.Background(), message("tok"))
	require.ErrorIs(t, err, notification.ErrCircuitOpen, "the breaker stopped the probe's retries")
	assert.Equal(t, "open", sender.BreakerState(), "one failed probe is enough")
	assert.Equal(t, before+1, fake.Requests())
}

func TestSuccessesOfEarlierRequestsDoNotHideAnOutage(t *testing.T) {
	t.Parallel()
	// Every other push fails: consecutive failures never reach 5, but half
	// of the attempts in the last second failed.
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerOpenFor: time.Minute})
	for i := range 20 {
		if i%2 == 0 {
			fake.FailToken(fmt.Sprintf("tok-%d", i), testutil.Fault{Code: testutil.FaultInternal})
		}
	}
	for i := range 20 {
		_, _ = sender.Push(context.Background(), message(fmt.Sprintf("tok-%d", i)))
		if sender.BreakerState() == "open" {
			return
		}
	}
	t.Fatal("the breaker never opened although half the attempts failed")
}

func TestA400WithoutFCMDetailIsAPermanentMessageFailureNotAnOutage(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 2})
	fake.FailAll(testutil.Fault{Code: testutil.FaultBadRequest})
	for range 5 {
		_, err := sender.Push(context.Background(), message("tok"))
		var se *notification.SendError
		require.ErrorAs(t, err, &se)
		assert.ErrorIs(t, err, notification.ErrMessageRejected)
		assert.False(t, se.CountsAgainstProvider)
	}
	assert.Equal(t, "closed", sender.BreakerState())
	assert.Equal(t, int64(5), fake.Requests(), "never retried")
}

func TestOurCredentialsRejectedCountAgainstTheBreakerAndRaiseTheAlarm(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 3, BreakerOpenFor: time.Minute})
	fake.FailAll(testutil.Fault{Code: testutil.FaultUnauthenticated})
	for range 3 {
		_, err := sender.Push(context.Background(), message("tok"))
		require.ErrorIs(t, err, notification.ErrCredentialsRejected)
		require.ErrorIs(t, err, notification.ErrMisconfigured, "the configuration alarm")
		require.False(t, notification.CountsAsAttempt(err))
	}
	assert.Equal(t, "open", sender.BreakerState())

	// A token's platform credentials (THIRD_PARTY_AUTH_ERROR) are not ours.
	fake2, sender2 := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 3})
	fake2.FailAll(testutil.Fault{Code: testutil.FaultThirdPartyAuth})
	for range 5 {
		_, err := sender2.Push(context.Background(), message("tok"))
		require.ErrorIs(t, err, notification.ErrMisconfigured)
		require.NotErrorIs(t, err, notification.ErrCredentialsRejected)
	}
	assert.Equal(t, "closed", sender2.BreakerState())
}

func TestARetryAfterLongerThanTheDeadlineIsKept(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{SendTimeout: 500 * time.Millisecond})
	fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable, RetryAfter: time.Minute})
	_, err := sender.Push(context.Background(), message("tok"))
	var se *notification.SendError
	require.ErrorAs(t, err, &se)
	assert.ErrorIs(t, err, notification.ErrProviderUnavailable)
	assert.Equal(t, "UNAVAILABLE", se.Code)
	assert.Equal(t, time.Minute, se.RetryAfter)
	assert.True(t, notification.CountsAsAttempt(err))
}

func TestACallersCancellationIsNotAnFCMFailure(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 2})
	fake.FailAll(testutil.Fault{Code: testutil.FaultHang})
	for range 4 {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for fake.Requests() == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel()
		}()
		_, err := sender.Push(ctx, message("tok"))
		cancel()
		var se *notification.SendError
		require.ErrorAs(t, err, &se)
		assert.ErrorIs(t, err, notification.ErrPushCancelled)
		assert.Equal(t, "CANCELLED", se.Code)
		assert.False(t, se.CountsAgainstProvider)
		assert.False(t, notification.CountsAsAttempt(err))
	}
	assert.Equal(t, "closed", sender.BreakerState(), "our own cancellations say nothing about FCM")
}

func TestAPushThatNeverGotARequestOutIsNotAnAttempt(t *testing.T) {
	t.Parallel()
	// Until FCM first answers, one request goes out at a time: the others
	// wait behind a hanging first request, and their deadline is not FCM's
	// verdict on them.
	fake, sender := newSender(t, adapters.FCMSenderConfig{SendTimeout: 2 * time.Second})
	fake.FailAll(testutil.Fault{Code: testutil.FaultHang})
	first := make(chan error, 1)
	go func() {
		_, err := sender.Push(context.Background(), message("tok"))
		first <- err
	}()
	require.Eventually(t, func() bool { return fake.Requests() == 1 }, 5*time.Second, time.Millisecond)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := sender.Push(ctx, message("tok"))
			var se *notification.SendError
			if assert.ErrorAs(t, err, &se) {
				assert.ErrorIs(t, err, notification.ErrPushCancelled)
				assert.Equal(t, "NOT_SENT", se.Code)
				assert.False(t, notification.CountsAsAttempt(err))
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(1), fake.Requests())
	require.ErrorIs(t, <-first, notification.ErrProviderUnavailable, "the request that hung timed out")
}

func TestAnFCMClientServesOneSender(t *testing.T) {
	t.Parallel()
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := adapters.NewFCMClient(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	_, err = adapters.NewFCMSender(client, adapters.FCMSenderConfig{})
	require.NoError(t, err)
	_, err = adapters.NewFCMSender(client, adapters.FCMSenderConfig{})
	require.Error(t, err)
}

func TestTimeoutsLongerThanTheBreakersWindowStillOpenIt(t *testing.T) {
	t.Parallel()
	// A hanging FCM answers nothing: each attempt ends at the push deadline,
	// more than a second after it started.
	fake, sender := newSender(t, adapters.FCMSenderConfig{SendTimeout: 1200 * time.Millisecond, BreakerFailures: 2, BreakerOpenFor: time.Minute})
	fake.FailAll(testutil.Fault{Code: testutil.FaultHang})
	for range 2 {
		_, err := sender.Push(context.Background(), message("tok"))
		require.ErrorIs(t, err, notification.ErrProviderUnavailable)
	}
	assert.Equal(t, "open", sender.BreakerState())
}

func TestARecoveringFCMIsRampedUpNotStampeded(t *testing.T) {
	t.Parallel()
	const workers = 128
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := adapters.NewFCMClient(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	// Below the breaker: how many requests are on the wire when each starts.
	rec := recordConcurrency(client)
	sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{BreakerFailures: 2, BreakerOpenFor: 200 * time.Millisecond})
	require.NoError(t, err)
	// Before the outage, traffic has widened the ramp to full speed.
	var warm sync.WaitGroup
	for i := range workers {
		warm.Add(1)
		go func() {
			defer warm.Done()
			for j := range 3 {
				_, err := sender.Push(context.Background(), message(fmt.Sprintf("warm-%d-%d", i, j)))
				assert.NoError(t, err)
			}
		}()
	}
	warm.Wait()
	fake.FailAll(testutil.Fault{Code: testutil.FaultInternal})
	for range 2 {
		_, _ = sender.Push(context.Background(), message("tok"))
	}
	require.Equal(t, "open", sender.BreakerState())
	fake.ClearFaults()
	fake.SetLatency(20 * time.Millisecond) // answers take a while: a stampede would show
	rec.reset()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, pushUntilSent(ctx, sender, message(fmt.Sprintf("tok-%d", i))))
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(workers*4), fake.AcceptedCount())
	concurrency := rec.seen()
	require.GreaterOrEqual(t, len(concurrency), 15)
	// 1, then 2, then 4, then 8 at once: the first 15 requests after the
	// outage never meet more than 8 on the wire.
	assert.LessOrEqual(t, slices.Max(concurrency[:15]), 8, "concurrency of the first requests: %v", concurrency[:15])
	assert.Greater(t, slices.Max(concurrency), 8, "the ramp widens to full speed")
}

func TestAColdSenderOpensOneConnectionThenRunsAtFullWidth(t *testing.T) {
	t.Parallel()
	const workers = 64
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	fake.SetLatency(20 * time.Millisecond) // a stampede of first requests would dial a connection each
	client, err := adapters.NewFCMClient(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rec := recordConcurrency(client)
	sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{})
	require.NoError(t, err)

	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := sender.Push(context.Background(), message(fmt.Sprintf("tok-%d", i)))
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(workers), fake.AcceptedCount())
	assert.EqualValues(t, 1, fake.Connections(), "every push shares the first request's connection")
	concurrency := rec.seen()
	require.Len(t, concurrency, workers)
	assert.Equal(t, 1, concurrency[0], "the first request goes out alone")
	// Doubling from one (1, 2, 4, 8) would keep the first 15 requests at 8
	// or fewer on the wire, for four round trips.
	assert.Greater(t, slices.Max(concurrency[:15]), 8,
		"after FCM's first answer every worker goes at once: %v", concurrency[:15])
}

func TestAnOutageInFullFlowCostsOneRoundOfRequestsNotTheirRetries(t *testing.T) {
	t.Parallel()
	const workers = 128
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerOpenFor: 500 * time.Millisecond, SendTimeout: 10 * time.Second})
	fake.SetLatency(20 * time.Millisecond) // 128 requests on the wire at any moment
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; !stop.Load(); j++ {
				assert.NoError(t, pushUntilSent(ctx, sender, message(fmt.Sprintf("tok-%d-%d", i, j))))
			}
		}()
	}
	require.Eventually(t, func() bool { return fake.AcceptedCount() > 2000 }, 30*time.Second, time.Millisecond,
		"full flow before the outage")
	before := fake.Requests()
	fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable})
	time.Sleep(3 * time.Second)
	during := fake.Requests() - before
	t.Logf("requests during the outage: %d", during)
	fake.ClearFaults()
	stop.Store(true)
	wg.Wait()
	// The requests already on their way when FCM began failing reach it;
	// after that, only probes. The SDK's retries of each would be 4 more
	// per worker.
	assert.LessOrEqual(t, during, int64(workers+50))
}

// The ramp after an opening counts only what the recovering FCM answers:
// pushes accepted before the outage whose answers arrive after the breaker
// opened must not widen it, or the first requests after the outage meet
// FCM all at once.
func TestAnswersFromBeforeAnOpeningDoNotWidenTheRampAfterIt(t *testing.T) {
	t.Parallel()
	const workers = 128
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := adapters.NewFCMClient(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rec := recordConcurrency(client)
	sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{BreakerFailures: 2, BreakerOpenFor: 500 * time.Millisecond})
	require.NoError(t, err)
	_, err = sender.Push(context.Background(), message("warm-up")) // a cold start opens at its first success
	require.NoError(t, err)

	// 100 pushes FCM is slow to accept are on the wire when it starts
	// failing the others fast: the breaker opens before they come back.
	var slow sync.WaitGroup
	for i := range 100 {
		tok := fmt.Sprintf("slow-%d", i)
		fake.FailToken(tok, testutil.Fault{Code: testutil.FaultNone, Latency: 300 * time.Millisecond})
		slow.Add(1)
		go func() {
			defer slow.Done()
			_, err := sender.Push(context.Background(), message(tok))
			assert.NoError(t, err, "accepted before the opening: sent")
		}()
	}
	require.Eventually(t, func() bool { return fake.Requests() >= 101 }, 5*time.Second, time.Millisecond)
	fake.FailAll(testutil.Fault{Code: testutil.FaultInternal})
	for range 2 {
		_, _ = sender.Push(context.Background(), message("tok"))
	}
	require.Equal(t, "open", sender.BreakerState())
	slow.Wait()
	fake.ClearFaults()
	fake.SetLatency(20 * time.Millisecond) // answers take a while: a stampede would show
	rec.reset()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, pushUntilSent(ctx, sender, message(fmt.Sprintf("tok-%d", i))))
		}()
	}
	wg.Wait()
	concurrency := rec.seen()
	require.GreaterOrEqual(t, len(concurrency), 15)
	// 1, then 2, then 4, then 8 at once: the first 15 requests after the
	// outage never meet more than 8 on the wire.
	assert.LessOrEqual(t, slices.Max(concurrency[:15]), 8, "concurrency of the first requests: %v", concurrency[:15])
}

// concurrencyRecorder records, below the breaker, how many requests are on
// the wire as each one starts.
type concurrencyRecorder struct {
	mu       sync.Mutex
	inFlight int
	starts   []int
}

func recordConcurrency(client *adapters.FCMClient) *concurrencyRecorder {
	rec := &concurrencyRecorder{}
	adapters.WrapFCMClientTransport(client, func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			rec.mu.Lock()
			rec.inFlight++
			rec.starts = append(rec.starts, rec.inFlight)
			rec.mu.Unlock()
			defer func() { rec.mu.Lock(); rec.inFlight--; rec.mu.Unlock() }()
			return next.RoundTrip(r)
		})
	})
	return rec
}

// reset forgets the requests seen so far.
func (rec *concurrencyRecorder) reset() {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.starts = nil
}

// seen returns, for each request since the last reset, how many were on
// the wire as it started.
func (rec *concurrencyRecorder) seen() []int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.starts)
}
