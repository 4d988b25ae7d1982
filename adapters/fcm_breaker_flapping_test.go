package adapters_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

// A breaker that opens and closes many times a second under concurrent
// pushes (its openings stopping the pushes under way, its ramp restarting)
// deadlocks nothing, and never reports as failed a push FCM accepted: such a
// push would be sent again. Every push FCM accepted is reported sent, once.
func TestAFlappingBreakerUnderLoadDeadlocksNothingAndLosesNoAcceptance(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 3, BreakerOpenFor: 5 * time.Millisecond,
		BreakerProbes: 1, SendTimeout: 10 * time.Second})
	fake.SetLatency(time.Millisecond)
	// Every third request fails: the SDK retries a 503, the breaker trips
	// on three in a row or a ratio over the window.
	fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable, Every: 3})

	type result struct {
		token string
		err   error
	}
	const workers = 32
	var results [workers][]result
	stop := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				token := fmt.Sprintf("tok-%d-%d", w, i)
				_, err := sender.Push(context.Background(), message(token))
				results[w] = append(results[w], result{token, err})
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		buf := make([]byte, 1<<22)
		t.Fatalf("pushes still under way 30s after the last started: deadlocked\n%s", buf[:runtime.Stack(buf, true)])
	}
	var sent, failed int
	for _, r := range slices.Concat(results[:]...) {
		accepted := len(fake.AcceptedFor(r.token))
		if r.err == nil {
			sent++
			if accepted != 1 {
				t.Errorf("push %s reported sent, accepted %d times", r.token, accepted)
			}
			continue
		}
		failed++
		if accepted != 0 {
			t.Errorf("push %s accepted by FCM but reported failed (%v): it would be sent again", r.token, r.err)
		}
	}
	t.Logf("%d sent, %d failed, breaker %s", sent, failed, sender.BreakerState())
	if sent == 0 || failed == 0 {
		t.Fatalf("%d sent, %d failed: the breaker did not flap", sent, failed)
	}
}
