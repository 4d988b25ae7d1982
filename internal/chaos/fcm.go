package chaos

import (
	"context"
	"runtime"
	"time"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
)

// outage returns how long a scenario's fault lasts: -outage, or its own.
func (e *chaosEnv) outage(short, long time.Duration) time.Duration {
	if e.opts.outage > 0 {
		return e.opts.outage
	}
	return chaosSize(e.opts, short, long)
}

// chaosFaultRun is the shape of fcm-outage and fcm-hang: a quarter of the
// events delivered normally, half committed while FCM is faulty, the last
// quarter after it recovers.
type chaosFaultRun struct {
	e          *chaosEnv
	load       *chaosLoad
	deliveries int
	fault      fakefcm.Fault
	lasts      time.Duration
	// breaker, if set, is told when the fault begins.
	breaker *chaosBreakerWatch
}

func (r chaosFaultRun) before(ctx context.Context) error {
	r.e.progress("committing %d pushes with fcm healthy", r.deliveries/4)
	r.load.run(ctx, chaosComments(r.deliveries/4), chaosSize(r.e.opts, time.Second, 4*time.Second), 3)
	return r.e.waitIdle(ctx, r.e.drainTimeout())
}

// during injects the fault, commits half the events while it lasts, and
// clears it. It returns how many requests reached FCM meanwhile.
func (r chaosFaultRun) during(ctx context.Context) (requests int64) {
	requestsBefore := r.e.fake.Requests()
	r.e.progress("fcm fault %s for %s; committing %d pushes meanwhile", r.fault.Code, r.lasts, r.deliveries/2)
	r.e.fake.FailAll(r.fault)
	began := time.Now()
	if r.breaker != nil {
		r.breaker.markFault(began)
	}
	r.load.run(ctx, chaosComments(r.deliveries/2), r.lasts*3/4, 3)
	cli.Sleep(ctx, time.Until(began.Add(r.lasts)))
	r.e.fake.ClearFaults()
	requests = r.e.fake.Requests() - requestsBefore
	r.e.progress("fcm recovered after %s; %d pushes received so far", time.Since(began).Round(time.Millisecond), r.e.pushes.total())
	return requests
}

func (r chaosFaultRun) after(ctx context.Context) {
	r.load.run(ctx, chaosComments(r.deliveries/4), chaosSize(r.e.opts, time.Second, 4*time.Second), 3)
}

// Promises of fcm-outage: with MaxInFlight 128 and the SDK's own retries
// (up to 4 per push on 503), at most this many requests reach FCM during
// the whole outage, and the breaker opens at most this long after it began.
const (
	chaosOutageMaxRequests = 50
	chaosOutageMaxToOpen   = time.Second
)

// runChaosFCMOutage makes FCM answer 503 UNAVAILABLE to everything for a
// while, with production's breaker, send timeout and SDK retries and 128
// pushes in flight. The breaker must open within a second, no request may
// reach FCM while it is open, at most 50 reach it during the whole outage,
// and everything is delivered once FCM recovers.
func runChaosFCMOutage(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	tuning := defaultChaosTuning()
	tuning.MaxInFlight = 128
	tuning.ProductionBreaker = true // 20 s send timeout: the SDK's retries (0, 1, 2, 4 s) all run
	tuning.Lease = time.Minute      // more than twice the send timeout
	s, err := e.setup(ctx, tuning, false)
	if err != nil {
		return nil, err
	}
	res, h, load := s.res, s.h, s.load
	watch := newChaosBreakerWatch(h, e.fake)
	run := chaosFaultRun{e: e, load: load, deliveries: e.deliveries(2_000, 20_000),
		fault: fakefcm.Fault{Code: fakefcm.FaultUnavailable}, lasts: e.outage(3*time.Second, 30*time.Second), breaker: watch}
	if err := run.before(ctx); err != nil {
		return nil, err
	}
	stopWatch := chaosEvery(time.Millisecond, watch.sample)
	defer stopWatch()
	requestsDuring := run.during(ctx)
	run.after(ctx)
	if err := s.finish(ctx, 0); err != nil {
		return nil, err
	}
	stopWatch()
	opened, openFor, whileOpen := watch.result()
	toOpen, didOpen := watch.timeToOpen()
	stats := h.Stats().Sender
	res.set("outage_seconds", run.lasts.Seconds())
	res.set("max_in_flight", tuning.MaxInFlight)
	res.set("breaker_opened", opened)
	if didOpen {
		res.set("breaker_open_after_ms", toOpen.Milliseconds())
	}
	res.set("breaker_open_seconds", chaosSeconds(openFor))
	res.set("requests_while_open", whileOpen)
	res.set("requests_during_outage", requestsDuring)
	res.set("refused_by_breaker", stats.CircuitOpen)
	res.set("retries_scheduled", stats.RetriesScheduled)
	res.check(didOpen, "the circuit breaker never opened during a %s outage", run.lasts)
	res.check(!didOpen || toOpen <= chaosOutageMaxToOpen, "the breaker opened %s after the outage began (promise: within %s)",
		toOpen.Round(time.Millisecond), chaosOutageMaxToOpen)
	res.check(requestsDuring <= chaosOutageMaxRequests, "%d requests reached fcm during the outage (promise: at most %d)",
		requestsDuring, chaosOutageMaxRequests)
	res.check(whileOpen == 0, "%d requests reached fcm while the breaker was open", whileOpen)
	return res, nil
}

// runChaosFCMHang makes FCM accept connections and never answer. Each push
// times out (SendTimeout), timeouts open the breaker, and neither
// goroutines nor heap grow with the backlog that builds meanwhile.
func runChaosFCMHang(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	s, err := e.setupDefault(ctx)
	if err != nil {
		return nil, err
	}
	res, h, load := s.res, s.h, s.load
	run := chaosFaultRun{e: e, load: load, deliveries: e.deliveries(2_000, 20_000),
		fault: fakefcm.Fault{Code: fakefcm.FaultHang}, lasts: e.outage(3*time.Second, 30*time.Second)}
	if err := run.before(ctx); err != nil {
		return nil, err
	}
	goroutinesBefore, heapBefore := runtime.NumGoroutine(), chaosLiveHeap()
	var resources chaosResourceWatch
	watch := newChaosBreakerWatch(h, e.fake)
	stops := []func(){
		chaosEvery(time.Millisecond, watch.sample),
		chaosEvery(10*time.Millisecond, resources.sampleGoroutines),
		chaosEvery(250*time.Millisecond, resources.sampleHeap),
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	run.during(ctx)
	stops[1]()
	stops[2]()
	run.after(ctx)
	if err := s.finish(ctx, 0); err != nil {
		return nil, err
	}
	stops[0]()
	opened, openFor, whileOpen := watch.result()
	maxGoroutines, maxHeap := resources.result()
	// Each push in flight holds a few goroutines (the push, its HTTP/2
	// stream, the fake's handler); nothing may grow with the backlog.
	goroutineBound := goroutinesBefore + 4*s.tuning.MaxInFlight + 64
	heapBound := 2*heapBefore + 64<<20
	stats := h.Stats().Sender
	res.set("hang_seconds", run.lasts.Seconds())
	res.set("breaker_opened", opened)
	res.set("breaker_open_seconds", chaosSeconds(openFor))
	res.set("requests_while_open", whileOpen)
	res.set("refused_by_breaker", stats.CircuitOpen)
	res.set("goroutines_before", goroutinesBefore)
	res.set("goroutines_max", maxGoroutines)
	res.set("goroutines_bound", goroutineBound)
	res.set("heap_before_mb", chaosMB(heapBefore))
	res.set("heap_max_mb", chaosMB(maxHeap))
	res.set("heap_bound_mb", chaosMB(heapBound))
	res.check(opened > 0, "timeouts never opened the circuit breaker during a %s hang", run.lasts)
	res.check(whileOpen == 0, "%d requests reached fcm while the breaker was open", whileOpen)
	res.check(maxGoroutines <= goroutineBound, "%d goroutines during the hang, more than %d", maxGoroutines, goroutineBound)
	res.check(maxHeap <= heapBound, "heap reached %.1f MB during the hang, more than %.1f MB", chaosMB(maxHeap), chaosMB(heapBound))
	return res, nil
}
