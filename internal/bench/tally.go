package bench

import (
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/herald-push/herald/internal/fakefcm"
)

// benchDataKey is the data key a bench notification carries its key in, so
// the fake can check that each device got its own message.
const benchDataKey = "i"

// benchTallyBucket is the resolution of the per-second window counts.
const benchTallyBucket = 10 * time.Millisecond

// benchTally counts what the fake FCM accepted during one phase of a
// scenario, compactly: every message of a bench is addressed to a token
// whose name ends in a key 0..n-1 (one message per token per phase), so a
// count and a first-accept time per key tell what was lost and duplicated
// without keeping the messages. It is safe for concurrent use.
type benchTally struct {
	mu         sync.Mutex
	start      time.Time
	counts     []uint16
	firstNanos []int64 // unix nanoseconds of each key's first accept
	buckets    []int32 // accepts per benchTallyBucket since start
	distinct   int
	accepted   int64
	unexpected int64 // tokens without a key in range
	mismatched int64 // data key not matching the token's key
	lastNanos  int64
	doneNanos  int64 // when the last missing key arrived
}

// benchProgress is a cheap snapshot for progress reports and waiting.
type benchProgress struct {
	Distinct int   `json:"distinct"`
	Accepted int64 `json:"accepted"`
	// DoneNanos is when every key had arrived (unix nanoseconds), or 0.
	DoneNanos int64 `json:"done_ns"`
	LastNanos int64 `json:"last_ns"`
}

// benchTallyStats is the full account of a phase.
type benchTallyStats struct {
	Expected   int   `json:"expected"`
	Distinct   int   `json:"distinct"`
	Accepted   int64 `json:"accepted"`
	Lost       int   `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	Unexpected int64 `json:"unexpected"`
	Mismatched int64 `json:"mismatched"`
	// MaxPerSecond is the most accepted pushes that arrived in any
	// one-second window (sliding, at benchTallyBucket resolution).
	MaxPerSecond int64 `json:"max_per_second"`
	DoneNanos    int64 `json:"done_ns"`
	LastNanos    int64 `json:"last_ns"`
}

// benchCommitSegment says that keys [From, To) were committed at CommitNanos.
type benchCommitSegment struct {
	From        int   `json:"from"`
	To          int   `json:"to"`
	CommitNanos int64 `json:"commit_ns"`
}

// benchLatency are percentiles of commit-to-accept times, in milliseconds.
type benchLatency struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
}

// reset starts a new phase expecting keys 0..n-1.
func (t *benchTally) reset(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.start = time.Now()
	t.counts, t.firstNanos, t.buckets = make([]uint16, n), make([]int64, n), make([]int32, 0, 1024)
	t.distinct, t.accepted, t.unexpected, t.mismatched = 0, 0, 0, 0
	t.lastNanos, t.doneNanos = 0, 0
}

// observe is the fake's OnAccept.
func (t *benchTally) observe(r fakefcm.Received) {
	key, ok := benchTokenKey(r.Token)
	at := r.At.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.accepted++
	t.lastNanos = max(t.lastNanos, at)
	// The window counts arrivals, as FCM's quota does, free of the jitter
	// of the fake's latency timers.
	arrived := r.Arrived
	if arrived.IsZero() {
		arrived = r.At
	}
	if b := int(arrived.Sub(t.start) / benchTallyBucket); b >= 0 {
		for len(t.buckets) <= b {
			t.buckets = append(t.buckets, 0)
		}
		t.buckets[b]++
	}
	if !ok || key >= len(t.counts) {
		t.unexpected++
		return
	}
	if v, has := r.Data[benchDataKey]; has && v != strconv.Itoa(key) {
		t.mismatched++
	}
	if t.counts[key] < 1<<16-1 {
		t.counts[key]++
	}
	if t.counts[key] == 1 {
		t.firstNanos[key] = at
		t.distinct++
		if t.distinct == len(t.counts) {
			t.doneNanos = at
		}
	}
}

func (t *benchTally) progress() benchProgress {
	t.mu.Lock()
	defer t.mu.Unlock()
	return benchProgress{Distinct: t.distinct, Accepted: t.accepted, DoneNanos: t.doneNanos, LastNanos: t.lastNanos}
}

func (t *benchTally) stats() benchTallyStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := benchTallyStats{
		Expected: len(t.counts), Distinct: t.distinct, Accepted: t.accepted,
		Unexpected: t.unexpected, Mismatched: t.mismatched, DoneNanos: t.doneNanos, LastNanos: t.lastNanos,
	}
	for _, c := range t.counts {
		switch {
		case c == 0:
			s.Lost++
		case c > 1:
			s.Duplicates += int64(c) - 1
		}
	}
	const window = int(time.Second / benchTallyBucket)
	var sum int64
	for i, c := range t.buckets {
		sum += int64(c)
		if i >= window {
			sum -= int64(t.buckets[i-window])
		}
		s.MaxPerSecond = max(s.MaxPerSecond, sum)
	}
	return s
}

// latency computes commit-to-first-accept percentiles over the keys the
// segments name; keys never accepted are left out (they are counted lost).
func (t *benchTally) latency(segments []benchCommitSegment) benchLatency {
	t.mu.Lock()
	var ds []int64
	for _, seg := range segments {
		for k := max(seg.From, 0); k < min(seg.To, len(t.firstNanos)); k++ {
			if t.counts[k] > 0 {
				ds = append(ds, t.firstNanos[k]-seg.CommitNanos)
			}
		}
	}
	t.mu.Unlock()
	if len(ds) == 0 {
		return benchLatency{}
	}
	slices.Sort(ds)
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	pick := func(q float64) int64 { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return benchLatency{Samples: len(ds), P50: ms(pick(0.50)), P99: ms(pick(0.99)), Max: ms(ds[len(ds)-1])}
}

// benchTokenKey returns the number a bench token ends with.
func benchTokenKey(token string) (int, bool) {
	i := len(token)
	for i > 0 && token[i-1] >= '0' && token[i-1] <= '9' {
		i--
	}
	if i == len(token) || len(token)-i > 9 {
		return 0, false
	}
	n := 0
	for _, c := range token[i:] {
		n = n*10 + int(c-'0')
	}
	return n, true
}
