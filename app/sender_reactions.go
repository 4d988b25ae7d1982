package app

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/internal/telemetry"
	"github.com/herald-push/herald/notification"
)

// The sender's reactions to FCM's answers that concern more than the
// delivery at hand: a throttled device, a project-wide quota, rejected APNs
// or web push credentials, and the logging of repeated alarms. Each is a
// small type fed with explicit times, so that its rules are tested with a
// controllable clock.

// quotaDetector tells a project-wide QUOTA_EXCEEDED from one device over its
// own rate: FCM answers both alike. The quota is evidently project-wide when
// minDevices distinct devices were throttled among the last 2×minDevices
// answers, all within window: one hot device among healthy traffic never
// trips it, while a project over its quota, where every answer is a 429,
// trips it within minDevices answers. It is safe for concurrent use.
type quotaDetector struct {
	window     time.Duration
	minDevices int

	mu     sync.Mutex
	recent []quotaAnswer // a ring of the last answers
	next   int
}

type quotaAnswer struct {
	at        time.Time
	device    uint64
	throttled bool
}

func newQuotaDetector(minDevices int, window time.Duration) *quotaDetector {
	minDevices = max(1, minDevices)
	return &quotaDetector{window: window, minDevices: minDevices, recent: make([]quotaAnswer, 2*minDevices)}
}

// observe records FCM's answer to a push to device at now, and reports
// whether the quota is now evidently project-wide. device identifies the
// token (a hash: tokens are never kept).
func (q *quotaDetector) observe(now time.Time, device uint64, throttled bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.recent[q.next] = quotaAnswer{at: now, device: device, throttled: throttled}
	q.next = (q.next + 1) % len(q.recent)
	if !throttled {
		return false
	}
	devices := make([]uint64, 0, q.minDevices)
	for _, a := range q.recent {
		// An answer from the future (the clock went back) is stale too.
		if !a.throttled || a.at.After(now) || now.Sub(a.at) > q.window {
			continue
		}
		if !slices.Contains(devices, a.device) {
			devices = append(devices, a.device)
		}
	}
	return len(devices) >= q.minDevices
}

// anyOther reports whether an answer of the last 2×minDevices, within
// window, was not of the watched kind.
func (q *quotaDetector) anyOther(now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, a := range q.recent {
		if !a.at.IsZero() && !a.throttled && !a.at.After(now) && now.Sub(a.at) <= q.window {
			return true
		}
	}
	return false
}

// onlyWatched reports whether every answer the detector holds (the last
// 2×minDevices, however old) was of the watched kind, from at least
// minDevices devices. Unlike observe it ignores the window: a quiet sender
// whose every answer is the same must see it too.
func (q *quotaDetector) onlyWatched() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	devices := make([]uint64, 0, q.minDevices)
	for _, a := range q.recent {
		if a.at.IsZero() {
			continue
		}
		if !a.throttled {
			return false
		}
		if !slices.Contains(devices, a.device) {
			devices = append(devices, a.device)
		}
	}
	return len(devices) >= q.minDevices
}

// maxDeviceHolds bounds the devices held at once. Past it, a throttled
// device's other pushes are not held back; its throttled delivery still
// waits for Retry-After.
const maxDeviceHolds = 10_000

// deviceHolds holds back the pushes to devices FCM throttled, until their
// Retry-After. It is safe for concurrent use.
type deviceHolds struct {
	mu    sync.Mutex
	holds map[uint64]deviceHold
}

type deviceHold struct {
	until time.Time
	d     time.Duration
}

func newDeviceHolds() *deviceHolds { return &deviceHolds{holds: map[uint64]deviceHold{}} }

// hold holds device's pushes for d from now.
func (h *deviceHolds) hold(device uint64, d time.Duration, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.holds) >= maxDeviceHolds {
		for dev, hd := range h.holds {
			if !hd.until.After(now) {
				delete(h.holds, dev)
			}
		}
		if len(h.holds) >= maxDeviceHolds {
			return
		}
	}
	if until := now.Add(d); until.After(h.holds[device].until) {
		h.holds[device] = deviceHold{until: until, d: d}
	}
}

// heldUntil reports whether device's pushes are held at now, and until when.
func (h *deviceHolds) heldUntil(device uint64, now time.Time) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hd, ok := h.holds[device]
	if !ok {
		return time.Time{}, false
	}
	// Over, or longer than asked: the clock went back. Either way, let go.
	if !hd.until.After(now) || hd.until.Sub(now) > hd.d {
		delete(h.holds, device)
		return time.Time{}, false
	}
	return hd.until, true
}

// platformGate pauses one platform's pushes while its APNs or web push
// credentials are rejected (THIRD_PARTY_AUTH_ERROR). The first rejection
// pauses the platform for min; while paused, its pushes are held. When the
// pause ends one push goes out as a probe, the others are still held: if the
// probe is rejected too the pause doubles, up to max; any success for the
// platform ends the pause; another outcome lets the next push probe. Each
// platform, "" (unknown) included, is its own bucket. It is safe for
// concurrent use.
type platformGate struct {
	min, max time.Duration

	mu     sync.Mutex
	gen    uint64 // numbers every pause, so a stale rejection is told apart
	paused map[notification.Platform]*platformPause
}

type platformPause struct {
	until   time.Time
	pause   time.Duration
	gen     uint64
	probing bool
}

// gateTicket is what a push admitted by the gate carries to its outcome.
type gateTicket struct {
	gen   uint64 // the pause in force when admitted, 0 if none
	probe bool
}

func newPlatformGate(minPause, maxPause time.Duration) *platformGate {
	return &platformGate{min: minPause, max: max(minPause, maxPause), paused: map[notification.Platform]*platformPause{}}
}

// admit decides whether a push for p may go out at now. If not, it returns
// when to try again.
func (g *platformGate) admit(p notification.Platform, now time.Time) (gateTicket, time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.paused[p]
	switch {
	case st == nil:
		return gateTicket{}, time.Time{}, true
	case now.Before(st.until) && st.until.Sub(now) <= st.pause:
		return gateTicket{}, st.until, false
	case st.probing:
		// The probe's answer decides; the others wait a short pause.
		return gateTicket{}, now.Add(g.min), false
	default:
		// The pause is over (or the clock went back past its start).
		st.probing = true
		return gateTicket{gen: st.gen, probe: true}, time.Time{}, true
	}
}

// rejected records a THIRD_PARTY_AUTH_ERROR for p at now and returns when the
// platform's pause ends and whether this rejection started or lengthened it.
// A rejection of a push admitted before the current pause (one of those in
// flight when it began) changes nothing.
func (g *platformGate) rejected(p notification.Platform, t gateTicket, now time.Time) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.paused[p]
	switch {
	case st == nil:
		g.gen++
		st = &platformPause{pause: g.min, gen: g.gen}
		g.paused[p] = st
	case t.probe && t.gen == st.gen:
		g.gen++
		st.pause, st.gen, st.probing = min(2*st.pause, g.max), g.gen, false
	default:
		return st.until, false
	}
	st.until = now.Add(st.pause)
	return st.until, true
}

// answered records any other outcome of a push for p: a success ends the
// pause (it reports whether there was one); another failure of the probe
// lets the next push probe.
func (g *platformGate) answered(p notification.Platform, t gateTicket, success bool) (cleared bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.paused[p]
	if st == nil {
		return false
	}
	if success {
		delete(g.paused, p)
		return true
	}
	if t.probe && t.gen == st.gen {
		st.probing = false
	}
	return false
}

// maxAlarmKinds bounds the kinds of alarm lines kept apart; past it, new
// kinds share one line.
const maxAlarmKinds = 64

// alarmLog logs repeated alarms and failures of one kind at most once per
// interval: the first at once, the following ones counted into the next line
// of that kind, which flush writes once the interval has passed. Each line
// says how many events it stands for (count). It is safe for concurrent use.
type alarmLog struct {
	log      *slog.Logger
	interval time.Duration
	tel      *telemetry.Telemetry // counts every event, logged or not

	mu      sync.Mutex
	kinds   map[string]*alarmLine
	pending atomic.Bool // some kind has counted events not yet logged
}

type alarmLine struct {
	level    slog.Level
	msg      string
	attrs    []any // of the latest event
	loggedAt time.Time
	logged   bool
	count    int // events since the last line
}

func newAlarmLog(log *slog.Logger, interval time.Duration, tel *telemetry.Telemetry) *alarmLog {
	return &alarmLog{log: log, interval: interval, tel: tel, kinds: map[string]*alarmLine{}}
}

// add records one event of kind at now, logged with msg and attrs (which
// must never hold a token or a message body).
func (a *alarmLog) add(now time.Time, kind string, level slog.Level, msg string, attrs ...any) {
	a.tel.Alarm(kind)
	a.mu.Lock()
	line := a.kinds[kind]
	if line == nil {
		if len(a.kinds) >= maxAlarmKinds {
			kind = "other"
			line = a.kinds[kind]
		}
		if line == nil {
			line = &alarmLine{}
			a.kinds[kind] = line
		}
	}
	line.level, line.msg, line.attrs = level, msg, attrs
	line.count++
	if !a.due(line, now) {
		a.pending.Store(true)
		a.mu.Unlock()
		return
	}
	rec := a.take(line, now)
	a.mu.Unlock()
	a.write(rec)
}

// flush logs the events counted for each kind whose interval has passed.
func (a *alarmLog) flush(now time.Time) {
	if !a.pending.Load() {
		return
	}
	var recs []alarmRecord
	a.mu.Lock()
	pending := false
	for _, line := range a.kinds {
		if line.count == 0 {
			continue
		}
		if a.due(line, now) {
			recs = append(recs, a.take(line, now))
		} else {
			pending = true
		}
	}
	a.pending.Store(pending)
	a.mu.Unlock()
	for _, rec := range recs {
		a.write(rec)
	}
}

func (a *alarmLog) due(line *alarmLine, now time.Time) bool {
	elapsed := now.Sub(line.loggedAt)
	// A negative elapsed time is a clock that went back: log rather than
	// stay silent until it catches up.
	return !line.logged || elapsed >= a.interval || elapsed < 0
}

type alarmRecord struct {
	level slog.Level
	msg   string
	attrs []any
}

func (a *alarmLog) take(line *alarmLine, now time.Time) alarmRecord {
	rec := alarmRecord{level: line.level, msg: line.msg,
		attrs: append(slices.Clip(line.attrs), "count", line.count, "per", a.interval)}
	line.logged, line.loggedAt, line.count = true, now, 0
	return rec
}

func (a *alarmLog) write(rec alarmRecord) {
	a.log.Log(context.Background(), rec.level, rec.msg, rec.attrs...)
}
