package app

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// Unit tests of the sender's reaction rules, each a pure type fed with
// explicit times.

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestQuotaDetectorTellsOneHotDeviceFromAProjectOverItsQuota(t *testing.T) {
	t.Parallel()
	type answer struct {
		after     time.Duration
		device    uint64
		throttled bool
	}
	tests := []struct {
		name    string
		answers []answer
		want    bool // after the last answer
	}{
		{"one device throttled again and again", []answer{
			{0, 1, true}, {10 * time.Millisecond, 1, true}, {20 * time.Millisecond, 1, true}, {30 * time.Millisecond, 1, true},
		}, false},
		{"three devices throttled in a row", []answer{{0, 1, true}, {time.Millisecond, 2, true}, {2 * time.Millisecond, 3, true}}, true},
		{"three devices throttled among healthy traffic", []answer{
			{0, 1, true}, {1, 10, false}, {2, 11, false}, {3, 12, false}, {4, 2, true},
			{5, 13, false}, {6, 14, false}, {7, 15, false}, {8, 3, true},
		}, false},
		{"three of the last six answers, three devices", []answer{
			{0, 1, true}, {1, 10, false}, {2, 2, true}, {3, 11, false}, {4, 3, true},
		}, true},
		{"three devices, but spread over more than the window", []answer{
			{0, 1, true}, {time.Second, 2, true}, {2*time.Second + time.Millisecond, 3, true},
		}, false},
		{"a success does not trip it", []answer{{0, 1, true}, {1, 2, true}, {2, 3, false}}, false},
		{"the clock went back: answers from the future do not count", []answer{
			{time.Hour, 1, true}, {time.Hour, 2, true}, {0, 3, true},
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q := newQuotaDetector(3, 2*time.Second)
			var got bool
			for _, a := range tt.answers {
				got = q.observe(t0.Add(a.after), a.device, a.throttled)
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestQuotaDetectorWithOneDevicePausesOnEveryThrottle(t *testing.T) {
	t.Parallel()
	q := newQuotaDetector(1, 2*time.Second)
	assert.False(t, q.observe(t0, 1, false))
	assert.True(t, q.observe(t0, 1, true))
}

func TestDeviceHoldsLastUntilRetryAfter(t *testing.T) {
	t.Parallel()
	h := newDeviceHolds()
	h.hold(1, 30*time.Second, t0)
	until, held := h.heldUntil(1, t0.Add(time.Second))
	assert.True(t, held)
	assert.Equal(t, t0.Add(30*time.Second), until)
	_, held = h.heldUntil(2, t0)
	assert.False(t, held, "other devices are not held")
	h.hold(1, time.Second, t0.Add(2*time.Second))
	until, _ = h.heldUntil(1, t0.Add(2*time.Second))
	assert.Equal(t, t0.Add(30*time.Second), until, "a shorter hold does not cut a longer one")
	_, held = h.heldUntil(1, t0.Add(30*time.Second))
	assert.False(t, held, "released when Retry-After has passed")

	h.hold(3, 30*time.Second, t0)
	_, held = h.heldUntil(3, t0.Add(-time.Hour))
	assert.False(t, held, "a clock gone back does not hold a device for an hour")
}

func TestDeviceHoldsStayBounded(t *testing.T) {
	t.Parallel()
	h := newDeviceHolds()
	for i := range maxDeviceHolds + 10 {
		h.hold(uint64(i), time.Minute, t0)
	}
	assert.Len(t, h.holds, maxDeviceHolds)
	h.hold(999_999, time.Minute, t0.Add(2*time.Minute)) // the old holds have expired: swept
	assert.Len(t, h.holds, 1)
}

func TestPlatformGatePausesOnePlatformAndDoublesWhileTheProbeIsRejected(t *testing.T) {
	t.Parallel()
	g := newPlatformGate(10*time.Second, 40*time.Second)
	ios, android := notification.PlatformIOS, notification.PlatformAndroid

	// Two pushes in flight when the credentials are first rejected.
	a, _, ok := g.admit(ios, t0)
	require.True(t, ok)
	b, _, ok := g.admit(ios, t0)
	require.True(t, ok)
	until, paused := g.rejected(ios, a, t0)
	assert.True(t, paused)
	assert.Equal(t, t0.Add(10*time.Second), until)
	until, paused = g.rejected(ios, b, t0.Add(time.Millisecond))
	assert.False(t, paused, "a push already in flight does not lengthen the pause")
	assert.Equal(t, t0.Add(10*time.Second), until)

	_, holdUntil, ok := g.admit(ios, t0.Add(time.Second))
	assert.False(t, ok, "ios is paused")
	assert.Equal(t, t0.Add(10*time.Second), holdUntil)
	_, _, ok = g.admit(android, t0.Add(time.Second))
	assert.True(t, ok, "android is not")
	_, _, ok = g.admit("", t0.Add(time.Second))
	assert.True(t, ok, "nor is a message of unknown platform")

	// The pause ends: one probe, the rest wait.
	probe, _, ok := g.admit(ios, t0.Add(10*time.Second))
	require.True(t, ok)
	assert.True(t, probe.probe)
	_, _, ok = g.admit(ios, t0.Add(10*time.Second))
	assert.False(t, ok, "one probe at a time")
	until, paused = g.rejected(ios, probe, t0.Add(11*time.Second))
	assert.True(t, paused)
	assert.Equal(t, t0.Add(31*time.Second), until, "rejected again: the pause doubles")

	probe, _, _ = g.admit(ios, t0.Add(31*time.Second))
	until, _ = g.rejected(ios, probe, t0.Add(31*time.Second))
	assert.Equal(t, t0.Add(71*time.Second), until, "40s: capped")
	probe, _, _ = g.admit(ios, t0.Add(71*time.Second))
	until, _ = g.rejected(ios, probe, t0.Add(71*time.Second))
	assert.Equal(t, t0.Add(111*time.Second), until, "still capped")

	// A probe that fails otherwise (a dead token) lets the next push probe.
	probe, _, _ = g.admit(ios, t0.Add(111*time.Second))
	assert.False(t, g.answered(ios, probe, false))
	next, _, ok := g.admit(ios, t0.Add(111*time.Second))
	require.True(t, ok)
	assert.True(t, next.probe)

	// A success ends the pause.
	assert.True(t, g.answered(ios, next, true))
	for range 3 {
		tk, _, ok := g.admit(ios, t0.Add(112*time.Second))
		assert.True(t, ok)
		assert.False(t, tk.probe)
	}
	// And a new rejection starts again from the shortest pause.
	tk, _, _ := g.admit(ios, t0.Add(200*time.Second))
	until, _ = g.rejected(ios, tk, t0.Add(200*time.Second))
	assert.Equal(t, t0.Add(210*time.Second), until)
}

func TestPlatformGateUnknownPlatformIsABucketOfItsOwn(t *testing.T) {
	t.Parallel()
	g := newPlatformGate(10*time.Second, time.Minute)
	tk, _, _ := g.admit("", t0)
	g.rejected("", tk, t0)
	_, _, ok := g.admit("", t0.Add(time.Second))
	assert.False(t, ok)
	for _, p := range []notification.Platform{notification.PlatformIOS, notification.PlatformAndroid, notification.PlatformWeb} {
		_, _, ok := g.admit(p, t0.Add(time.Second))
		assert.True(t, ok, p)
	}
}

func TestPlatformGateSurvivesAClockGoingBack(t *testing.T) {
	t.Parallel()
	g := newPlatformGate(10*time.Second, time.Minute)
	tk, _, _ := g.admit(notification.PlatformWeb, t0)
	g.rejected(notification.PlatformWeb, tk, t0)
	tk, _, ok := g.admit(notification.PlatformWeb, t0.Add(-time.Hour))
	assert.True(t, ok, "a pause that seems an hour long is over: probe")
	assert.True(t, tk.probe)
}

func TestAlarmLogWritesOneLinePerKindAndInterval(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	a := newAlarmLog(slog.New(slog.NewJSONHandler(&buf, nil)), 10*time.Second, nil)
	lines := func() []map[string]any {
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if l == "" {
				continue
			}
			var rec map[string]any
			require.NoError(t, json.Unmarshal([]byte(l), &rec))
			out = append(out, rec)
		}
		return out
	}
	for i := range 100 {
		a.add(t0.Add(time.Duration(i)*time.Millisecond), "apns", slog.LevelError, "apns rejected", "n", i)
	}
	a.add(t0, "quota", slog.LevelWarn, "quota")
	require.Len(t, lines(), 2, "one line per kind")
	assert.EqualValues(t, 1, lines()[0]["count"])
	assert.EqualValues(t, 0, lines()[0]["n"])

	a.flush(t0.Add(9 * time.Second))
	require.Len(t, lines(), 2, "not before the interval")
	a.flush(t0.Add(10 * time.Second))
	require.Len(t, lines(), 3, "then what was counted, once")
	assert.EqualValues(t, 99, lines()[2]["count"])
	assert.EqualValues(t, 99, lines()[2]["n"], "with the latest event's attributes")
	a.flush(t0.Add(30 * time.Second))
	require.Len(t, lines(), 3, "nothing more to say")

	a.add(t0.Add(30*time.Second), "apns", slog.LevelError, "apns rejected")
	require.Len(t, lines(), 4, "a quiet interval later, the next event is logged at once")
	a.add(t0.Add(31*time.Second), "apns", slog.LevelError, "apns rejected")
	require.Len(t, lines(), 4)
	a.flush(t0.Add(-time.Hour))
	require.Len(t, lines(), 5, "a clock gone back does not silence alarms")
}

func TestAlarmLogKindsStayBounded(t *testing.T) {
	t.Parallel()
	a := newAlarmLog(slog.New(slog.DiscardHandler), time.Second, nil)
	for i := range 10 * maxAlarmKinds {
		a.add(t0, strings.Repeat("k", i), slog.LevelError, "hostile codes")
	}
	assert.LessOrEqual(t, len(a.kinds), maxAlarmKinds+1)
}

func TestSenderConfigRefusesAHugeQuotaDeviceCount(t *testing.T) {
	t.Parallel()
	assert.Error(t, SenderConfig{QuotaDevices: 1 << 30}.Validate(), "the detector keeps 2×QuotaDevices answers")
	assert.Error(t, SenderConfig{QuotaDevices: -1}.Validate())
	assert.Error(t, SenderConfig{PlatformPause: -time.Second}.Validate())
	assert.NoError(t, SenderConfig{QuotaDevices: 1}.Validate())
}

// A wall clock stepped back during a pause (NTP) must not stop sending for
// the length of the step: the pause ends at most its own length later.
func TestAPauseOutlastsNoClockStepBack(t *testing.T) {
	t.Parallel()
	var p sendPause
	p.extend(t0, time.Second)
	assert.Equal(t, time.Second, p.remaining(t0))
	assert.Equal(t, 400*time.Millisecond, p.remaining(t0.Add(600*time.Millisecond)))
	back := t0.Add(-time.Hour)
	assert.Equal(t, time.Second, p.remaining(back), "after the step the pause lasts at most its length")
	assert.Equal(t, 500*time.Millisecond, p.remaining(back.Add(500*time.Millisecond)))
	assert.LessOrEqual(t, p.remaining(back.Add(time.Second)), time.Duration(0))
	// A later, longer pause still extends it.
	p.extend(back.Add(time.Second), 3*time.Second)
	assert.Equal(t, 3*time.Second, p.remaining(back.Add(time.Second)))
}
