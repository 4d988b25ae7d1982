package chaos

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/herald-push/herald/internal/backlog"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
)

// chaosHotMinShare is the share of its normal throughput the rest must
// keep while one device is throttled: "full speed", with room for a
// loaded machine's noise.
const chaosHotMinShare = 0.5

// runChaosHotDevice throttles one device: FCM answers QUOTA_EXCEEDED with
// Retry-After for every push to it, as it does for a device over its
// per-device rate, while every other device is fine. Only that device's
// deliveries may wait; the rest must flow at full speed. Two equal
// backlogs are handed to Herald at once (the relay is held while each is
// committed): one with FCM healthy, one with the hot device, and the time
// to deliver every other push of each is compared. Nothing is lost.
func runChaosHotDevice(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	deliveries := e.deliveries(2_000, 20_000)
	retryAfter := 2 * time.Second
	hot := fmt.Sprintf("%s-device-%d", chaosAuthor(1), 0)

	s, err := e.setupDefault(ctx)
	if err != nil {
		return nil, err
	}
	res, h, load := s.res, s.h, s.load
	e.pushes.watch(hot)

	baseline, err := e.timedBacklog(ctx, load, deliveries/2, hot)
	if err != nil {
		return nil, err
	}
	e.progress("healthy: %d pushes to the other devices in %s (%.0f/s)", baseline.pushes, baseline.took.Round(time.Millisecond), baseline.rate())

	e.fake.FailToken(hot, fakefcm.Fault{Code: fakefcm.FaultQuotaExceeded, RetryAfter: retryAfter})
	requestsBefore := e.fake.Requests()
	quotaBefore := h.Stats().Sender.QuotaExceeded
	during, err := e.timedBacklog(ctx, load, deliveries/2, hot)
	if err != nil {
		return nil, err
	}
	quotaSeen := h.Stats().Sender.QuotaExceeded - quotaBefore
	e.progress("one device throttled: %d pushes to the other devices in %s (%.0f/s); %d QUOTA_EXCEEDED seen",
		during.pushes, during.took.Round(time.Millisecond), during.rate(), quotaSeen)
	cli.Sleep(ctx, retryAfter)
	e.fake.ClearFaults()
	requestsDuring := e.fake.Requests() - requestsBefore
	if err := s.finish(ctx, 0); err != nil {
		return nil, err
	}

	share := 0.0
	if baseline.rate() > 0 {
		share = during.rate() / baseline.rate()
	}
	res.set("retry_after_seconds", retryAfter.Seconds())
	res.set("others_healthy_per_s", math.Round(baseline.rate()))
	res.set("others_with_hot_device_per_s", math.Round(during.rate()))
	res.set("others_share", math.Round(share*100)/100)
	res.set("others_seconds_healthy", chaosSeconds(baseline.took))
	res.set("others_seconds_with_hot_device", chaosSeconds(during.took))
	res.set("quota_exceeded_seen", quotaSeen)
	res.set("requests_while_hot", requestsDuring)
	res.set("pushes_to_hot_device", len(e.pushes.pushesToWatched()))
	res.check(quotaSeen > 0, "the hot device was never pushed to while throttled")
	res.check(share >= chaosHotMinShare, "the other devices got %.0f%% of their healthy throughput while one device was throttled (promise: at least %.0f%%)",
		share*100, chaosHotMinShare*100)
	return res, nil
}

// chaosBacklog is one backlog handed to Herald at once: how many pushes to
// devices other than the hot one it held, and how long they took.
type chaosBacklog struct {
	pushes int
	took   time.Duration
}

func (b chaosBacklog) rate() float64 {
	if b.took <= 0 {
		return 0
	}
	return float64(b.pushes) / b.took.Seconds()
}

// timedBacklog holds the relay, commits about n pushes, releases it, and
// times how long Herald takes to relay them and send every push except
// those to hot.
func (e *chaosEnv) timedBacklog(ctx context.Context, load *chaosLoad, n int, hot string) (chaosBacklog, error) {
	release, err := e.holdRelay(ctx)
	if err != nil {
		return chaosBacklog{}, err
	}
	defer release()
	load.run(ctx, chaosComments(n), 0, 3)
	before := e.pushes.total() - len(e.pushes.pushesToWatched())
	release()
	took, err := e.waitFor(ctx, e.drainTimeout(), "every push of the backlog but the hot device's",
		func(ctx context.Context) (bool, error) { return backlog.IdleExceptToken(ctx, e.admin, hot) })
	if err != nil {
		return chaosBacklog{}, err
	}
	return chaosBacklog{pushes: e.pushes.total() - len(e.pushes.pushesToWatched()) - before, took: took}, nil
}
