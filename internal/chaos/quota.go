package chaos

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
)

// chaosQuotaGrace is how long after the sender decides to pause a request
// may still arrive without breaking Retry-After: pushes already past the
// pause check and on their way when the answer came in. That is a few
// milliseconds on a quiet machine; under the race detector on two busy
// cores, a CI run measured 152 ms. Requests in the grace are reported
// (requests_in_grace).
const chaosQuotaGrace = 300 * time.Millisecond

// chaosQuotaRate is the sender's rate limit in the storm, 200 pushes a
// second: Herald sends at its limit, as a project near its quota does (which
// is when 429s come), so pushes queue at the rate limiter, where a 429 finds
// them.
const chaosQuotaRate = 12_000

// runChaosQuotaStorm answers QUOTA_EXCEEDED with Retry-After to many
// requests in a row. Once the sender sees that the 429s are project-wide
// (Sender.QuotaDevices distinct devices throttled; one device's 429 only
// holds that device) it pauses all sending: from then no request may reach
// FCM before Retry-After has passed. Then throughput comes back.
func runChaosQuotaStorm(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	tuning := defaultChaosTuning()
	tuning.Lease = 10 * time.Second // claims wait out the pauses
	tuning.RatePerMinute = chaosQuotaRate
	deliveries := e.deliveries(2_000, 20_000)
	retryAfter := 2 * time.Second
	answers := chaosSize(e.opts, 2, 5) * tuning.MaxInFlight

	s, err := e.setup(ctx, tuning, true)
	if err != nil {
		return nil, err
	}
	res, h, load := s.res, s.h, s.load

	// The baseline: a backlog sent with FCM healthy, as fast as Herald goes.
	e.progress("committing %d pushes, then starting herald with fcm healthy", deliveries/5)
	load.run(ctx, chaosComments(deliveries/5), 0, 3)
	began := time.Now()
	h.start(ctx)
	if err := e.waitIdle(ctx, e.drainTimeout()); err != nil {
		return nil, err
	}
	rateBefore := e.pushes.rate(began, e.pushes.lastAt())

	watch := &chaosQuotaWatch{h: h, fake: e.fake, retryAfter: retryAfter, prevAt: time.Now(),
		prevRequests: e.fake.Requests(), prevQuota: h.Stats().Sender.QuotaPauses, minGap: math.MaxInt64}
	stopWatch := chaosEvery(time.Millisecond, watch.sample)
	defer stopWatch()
	requestsBefore := e.fake.Requests()
	e.fake.FailAll(fakefcm.Fault{Code: fakefcm.FaultQuotaExceeded, RetryAfter: retryAfter, Times: answers})
	stormBegan := time.Now()
	e.progress("429 storm: the next %d requests get QUOTA_EXCEEDED with Retry-After %s; committing %d pushes",
		answers, retryAfter, deliveries*3/5)
	load.run(ctx, chaosComments(deliveries*3/5), 0, 3)
	for e.fake.Requests()-requestsBefore < int64(answers) {
		if time.Since(stormBegan) > e.drainTimeout() {
			return nil, fmt.Errorf("the storm's %d answers were not used up after %s", answers, e.drainTimeout())
		}
		if !cli.Sleep(ctx, 10*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	stormEnded := time.Now()
	e.fake.ClearFaults()
	e.progress("storm over after %s; %d pushes received so far", stormEnded.Sub(stormBegan).Round(time.Millisecond), e.pushes.total())
	load.run(ctx, chaosComments(deliveries/5), 0, 3)
	if err := s.finish(ctx, 0); err != nil {
		return nil, err
	}
	stopWatch()
	rateAfter := e.pushes.rate(stormEnded, e.pushes.lastAt())

	w := watch.result()
	res.set("rate_per_minute", chaosQuotaRate)
	res.set("retry_after_seconds", retryAfter.Seconds())
	res.set("quota_answers", answers)
	res.set("quota_seen_by_sender", h.Stats().Sender.QuotaExceeded)
	res.set("pauses", w.pauses)
	res.set("storm_seconds", chaosSeconds(stormEnded.Sub(stormBegan)))
	res.set("requests_before_retry_after", w.early)
	res.set("requests_in_grace", w.inGrace)
	if w.minGap != math.MaxInt64 {
		res.set("min_gap_after_429_ms", w.minGap.Milliseconds())
	}
	res.set("throughput_before_per_s", math.Round(rateBefore))
	res.set("throughput_after_per_s", math.Round(rateAfter))
	res.check(w.pauses > 0, "the sender never saw a 429")
	res.check(w.early == 0, "%d requests reached fcm before Retry-After had passed", w.early)
	res.check(rateAfter > 0, "no push after the storm")
	return res, nil
}

// chaosQuotaWatch samples the sender's count of project-wide pauses and the
// requests reaching the fake. The first pause decided while sending is not
// paused starts a pause; later ones may extend it. A 429 counted between two samples was
// heard at the earliest at the first, so the pause it starts or extends ends
// at the earliest Retry-After after that. A request counted between two
// samples arrived after the first: if that is more than chaosQuotaGrace
// after the pause started and the second sample is still inside the pause,
// it was sent after the sender knew to wait.
type chaosQuotaWatch struct {
	h          *chaosHerald
	fake       *fakefcm.Server
	retryAfter time.Duration

	mu           sync.Mutex
	prevAt       time.Time
	prevRequests int64
	prevQuota    int64
	pauseStart   time.Time // sample that saw the 429 starting the current pause
	pauseEnd     time.Time
	awaitingGap  bool

	pauses, early, inGrace int64
	minGap                 time.Duration
}

type chaosQuotaResult struct {
	pauses, early, inGrace int64
	minGap                 time.Duration
}

func (w *chaosQuotaWatch) sample(time.Time) {
	// The ticker's time may be stale by the time this runs: take the
	// clock around the reads instead. A pause seen here was decided after
	// the previous sample's reads began (prevAt), and every request counted
	// here arrived after them and before now.
	readAt := time.Now()
	quota := w.h.Stats().Sender.QuotaPauses
	requests := w.fake.Requests()
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if quota > w.prevQuota {
		if !w.prevAt.Before(w.pauseEnd) {
			w.pauses++
			w.pauseStart = now
			w.awaitingGap = true
		}
		w.pauseEnd = chaosMaxTime(w.pauseEnd, w.prevAt.Add(w.retryAfter))
	}
	if arrived := requests - w.prevRequests; arrived > 0 && !w.pauseStart.IsZero() {
		pastGrace := !w.prevAt.Before(w.pauseStart.Add(chaosQuotaGrace))
		switch {
		case pastGrace && now.Before(w.pauseEnd):
			w.early += arrived
		case !pastGrace && now.Before(w.pauseEnd):
			w.inGrace += arrived
		}
		if pastGrace && w.awaitingGap {
			w.minGap = min(w.minGap, w.prevAt.Sub(w.pauseStart))
			w.awaitingGap = false
		}
	}
	w.prevAt, w.prevRequests, w.prevQuota = readAt, requests, quota
}

func (w *chaosQuotaWatch) result() chaosQuotaResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	return chaosQuotaResult{pauses: w.pauses, early: w.early, inGrace: w.inGrace, minGap: w.minGap}
}

func chaosMaxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
