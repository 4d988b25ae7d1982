package bench

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// benchTracer times, as the client sees them, every statement on a bench
// database's pool (from sending it until its rows are closed, so decoding
// counts) and every wait for a pooled connection. With -pgstats it explains
// where Herald's database time goes, next to Postgres's own view.
type benchTracer struct {
	mu      sync.Mutex
	byQuery map[string]*benchTiming
	acquire benchTiming
}

// benchTiming accumulates durations.
type benchTiming struct {
	calls int64
	total time.Duration
	max   time.Duration
}

func (t *benchTiming) add(d time.Duration) {
	t.calls++
	t.total += d
	t.max = max(t.max, d)
}

// benchClientStatement is one statement's client-side timing.
type benchClientStatement struct {
	Calls        int64   `json:"calls"`
	TotalSeconds float64 `json:"total_s"`
	MeanMs       float64 `json:"mean_ms"`
	MaxMs        float64 `json:"max_ms"`
	Query        string  `json:"query"`
}

type benchTraceKey struct{}

type benchTraceStart struct {
	at    time.Time
	query string
}

func newBenchTracer() *benchTracer { return &benchTracer{byQuery: map[string]*benchTiming{}} }

// TraceQueryStart implements pgx.QueryTracer.
func (t *benchTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, benchTraceKey{}, benchTraceStart{at: time.Now(), query: data.SQL})
}

// TraceQueryEnd implements pgx.QueryTracer.
func (t *benchTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	start, ok := ctx.Value(benchTraceKey{}).(benchTraceStart)
	if !ok {
		return
	}
	d := time.Since(start.at)
	key := benchQueryKey(start.query)
	t.mu.Lock()
	defer t.mu.Unlock()
	timing := t.byQuery[key]
	if timing == nil {
		timing = &benchTiming{}
		t.byQuery[key] = timing
	}
	timing.add(d)
}

// TraceAcquireStart implements pgxpool.AcquireTracer.
func (t *benchTracer) TraceAcquireStart(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireStartData) context.Context {
	return context.WithValue(ctx, benchTraceKey{}, benchTraceStart{at: time.Now()})
}

// TraceAcquireEnd implements pgxpool.AcquireTracer.
func (t *benchTracer) TraceAcquireEnd(ctx context.Context, _ *pgxpool.Pool, _ pgxpool.TraceAcquireEndData) {
	start, ok := ctx.Value(benchTraceKey{}).(benchTraceStart)
	if !ok {
		return
	}
	d := time.Since(start.at)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.acquire.add(d)
}

// reset forgets everything timed so far.
func (t *benchTracer) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byQuery = map[string]*benchTiming{}
	t.acquire = benchTiming{}
}

// top returns the n statements that took the most client time, and the
// waits for a connection as a pseudo-statement.
func (t *benchTracer) top(n int) []benchClientStatement {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]benchClientStatement, 0, len(t.byQuery)+1)
	add := func(query string, timing benchTiming) {
		if timing.calls == 0 {
			return
		}
		out = append(out, benchClientStatement{
			Calls: timing.calls, TotalSeconds: timing.total.Seconds(),
			MeanMs: float64(timing.total) / float64(timing.calls) / 1e6, MaxMs: float64(timing.max) / 1e6, Query: query,
		})
	}
	for q, timing := range t.byQuery {
		add(q, *timing)
	}
	add("(waiting for a pooled connection)", t.acquire)
	slices.SortFunc(out, func(a, b benchClientStatement) int { return cmp.Compare(b.TotalSeconds, a.TotalSeconds) })
	return out[:min(n, len(out))]
}

// benchQueryKey is a statement's first 100 characters, whitespace folded.
func benchQueryKey(sql string) string {
	key := strings.Join(strings.Fields(sql), " ")
	if len(key) > 100 {
		key = key[:100]
	}
	return key
}
