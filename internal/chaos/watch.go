package chaos

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/outbox"
)

// every calls fn every interval, from one goroutine, until the returned
// stop is called; stop waits for the last call to return.
func chaosEvery(interval time.Duration, fn func(now time.Time)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				fn(now)
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// chaosBreakerWatch follows the circuit breaker's state and the requests that
// reach the fake FCM, sampled together.
type chaosBreakerWatch struct {
	h    *chaosHerald
	fake *fakefcm.Server

	mu           sync.Mutex
	prevState    string
	prevRequests int64
	prevAt       time.Time
	opened       int           // transitions into open
	openedAt     time.Time     // when the current open period was first seen
	openFor      time.Duration // time seen open
	whileOpen    int64         // requests that arrived between two samples that both saw it open
	faultAt      time.Time     // when the fault began (markFault)
	firstOpen    time.Time     // the first sample that saw it open after faultAt
}

// markFault records when the fault began: result reports the time from
// then to the breaker's first opening.
func (w *chaosBreakerWatch) markFault(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.faultAt, w.firstOpen = at, time.Time{}
}

// timeToOpen returns how long after markFault the breaker was first seen
// open, and false if it was not.
func (w *chaosBreakerWatch) timeToOpen() (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.faultAt.IsZero() || w.firstOpen.IsZero() {
		return 0, false
	}
	return w.firstOpen.Sub(w.faultAt), true
}

// chaosOpenGrace is how long after the breaker opens a request sent just
// before may still arrive at the fake.
const chaosOpenGrace = 50 * time.Millisecond

func newChaosBreakerWatch(h *chaosHerald, fake *fakefcm.Server) *chaosBreakerWatch {
	return &chaosBreakerWatch{h: h, fake: fake, prevState: h.Stats().Breaker, prevRequests: fake.Requests(), prevAt: time.Now()}
}

// sample is every's callback. The state is read before the requests: a
// request counted in an interval whose both ends saw the breaker open was
// let through while it was open (a half-open probe keeps it half-open for
// the whole push, far longer than the interval). A request already on the
// wire when the breaker opened may arrive just after; the first
// chaosOpenGrace of an open period does not count.
func (w *chaosBreakerWatch) sample(now time.Time) {
	state := w.h.Stats().Breaker
	requests := w.fake.Requests()
	w.mu.Lock()
	defer w.mu.Unlock()
	if state == "open" && w.prevState != "open" {
		w.openedAt = now
	}
	if state == "open" && w.prevState == "open" && now.Sub(w.openedAt) > chaosOpenGrace {
		w.whileOpen += requests - w.prevRequests
		w.openFor += now.Sub(w.prevAt)
	}
	if state == "open" && w.prevState != "open" {
		w.opened++
	}
	if state == "open" && !w.faultAt.IsZero() && w.firstOpen.IsZero() && !now.Before(w.faultAt) {
		w.firstOpen = now
	}
	w.prevState, w.prevRequests, w.prevAt = state, requests, now
}

func (w *chaosBreakerWatch) result() (opened int, openFor time.Duration, whileOpen int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.opened, w.openFor, w.whileOpen
}

// chaosResourceWatch keeps the highest goroutine count and heap seen.
type chaosResourceWatch struct {
	mu            sync.Mutex
	maxGoroutines int
	maxHeap       uint64
}

// sampleGoroutines is cheap: it can run often.
func (w *chaosResourceWatch) sampleGoroutines(time.Time) {
	n := runtime.NumGoroutine()
	w.mu.Lock()
	w.maxGoroutines = max(w.maxGoroutines, n)
	w.mu.Unlock()
}

// sampleHeap stops the world briefly: run it a few times a second.
func (w *chaosResourceWatch) sampleHeap(time.Time) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.mu.Lock()
	w.maxHeap = max(w.maxHeap, ms.HeapAlloc)
	w.mu.Unlock()
}

func (w *chaosResourceWatch) result() (goroutines int, heap uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxGoroutines, w.maxHeap
}

// chaosLiveHeap returns the heap in use after a collection.
func chaosLiveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func chaosMB(b uint64) float64 { return float64(b/(1<<16)) / 16 }

// chaosMaxRelayStall is how long the relay may go without progress while
// committed events wait for it, through a crash or a cut connection. Its
// subscriber retries a failed query after a second; ten is generous.
const chaosMaxRelayStall = 10 * time.Second

// chaosRelayWatch measures the relay's longest stall: how long committed
// events visible to it waited with no acknowledgement moving its consumer
// group's offset. It reads the database, so it sees a relay in any process.
type chaosRelayWatch struct {
	e *chaosEnv

	mu         sync.Mutex
	lastOffset string
	stallSince time.Time // zero while nothing waits
	maxStall   time.Duration
}

func (w *chaosRelayWatch) sample(now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var waiting bool
	var offset string
	err := w.e.admin.QueryRow(ctx, `SELECT
		EXISTS (
			SELECT 1 FROM watermill_herald_outbox m
			LEFT JOIN watermill_offsets_herald_outbox o ON o.consumer_group = $1
			WHERE m.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
			  AND (o.consumer_group IS NULL
			       OR (m.transaction_id, m."offset") > (o.last_processed_transaction_id, o.offset_acked))),
		coalesce((SELECT last_processed_transaction_id::text || '/' || offset_acked
			FROM watermill_offsets_herald_outbox WHERE consumer_group = $1), '')`,
		outbox.ConsumerGroup).Scan(&waiting, &offset)
	if err != nil {
		return // Postgres restarting: the stall, if any, goes on
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case !waiting:
		w.stallSince = time.Time{}
	case offset != w.lastOffset || w.stallSince.IsZero():
		w.stallSince = now // progress, or new work: the clock starts
	default:
		w.maxStall = max(w.maxStall, now.Sub(w.stallSince))
	}
	w.lastOffset = offset
}

func (w *chaosRelayWatch) result() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxStall
}

// watchRelay samples the relay's progress until the returned stop is first
// called, which records the longest stall in res and checks it against
// allowed (chaosMaxRelayStall unless a scenario promises otherwise).
func (e *chaosEnv) watchRelay(res *chaosResult, allowed time.Duration) (stop func()) {
	w := &chaosRelayWatch{e: e}
	stopEvery := chaosEvery(100*time.Millisecond, w.sample)
	var once sync.Once
	return func() {
		once.Do(func() {
			stopEvery()
			stall := w.result()
			res.set("relay_stall_max_seconds", chaosSeconds(stall))
			res.check(stall <= allowed, "the relay made no progress for %s while committed events waited (more than %s)",
				stall.Round(100*time.Millisecond), allowed)
		})
	}
}
