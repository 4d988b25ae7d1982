package app_test

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// These tests run a real Sender on in-memory fakes with a clock that stands
// still unless a test moves it: any pause the sender takes lasts until the
// test advances the clock, so "not slowed down" means "done without moving
// the clock".

func TestOneThrottledDeviceDoesNotSlowTheOthers(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	// The hot device comes first, with three pushes waiting.
	hot := []int64{
		store.add("hot-device", notification.PlatformAndroid, clock.Now()),
		store.add("hot-device", notification.PlatformAndroid, clock.Now()),
		store.add("hot-device", notification.PlatformAndroid, clock.Now()),
	}
	for i := range 100 {
		store.add(fmt.Sprintf("healthy-%03d", i), notification.PlatformAndroid, clock.Now())
	}
	pusher := newFakePusher(func(msg notification.Message) error {
		if msg.Token == "hot-device" {
			return sendErr(notification.ErrQuotaExceeded, "QUOTA_EXCEEDED", 30*time.Second)
		}
		return nil
	})
	s := runSender(t, store, pusher, senderConfig(clock))

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, map[notification.DeliveryStatus]int{notification.StatusSent: 100}, store.statuses(hasPrefix("healthy-")))
		assert.Equal(c, map[notification.DeliveryStatus]int{
			notification.StatusRetryScheduled: 1, notification.StatusPending: 2,
		}, store.statuses(hasPrefix("hot-")))
	}, waitFor, 5*time.Millisecond, "every healthy device is served without the clock moving")

	assert.Equal(t, 1, pusher.callsTo(hasPrefix("hot-")), "the hot device's other pushes are held, not sent")
	throttled := store.delivery(hot[0])
	assert.Equal(t, 1, throttled.Attempts())
	assert.Equal(t, "QUOTA_EXCEEDED", throttled.ErrorCode())
	assert.False(t, throttled.DueAt().Before(clock.Now().Add(30*time.Second)), "retried no sooner than Retry-After")
	for _, id := range hot[1:] {
		held := store.delivery(id)
		assert.Zero(t, held.Attempts(), "a held push is not an attempt")
		assert.Equal(t, clock.Now().Add(30*time.Second), held.DueAt(), "held until the device's Retry-After")
	}
	st := s.Stats()
	assert.Equal(t, int64(1), st.QuotaExceeded)
	assert.Zero(t, st.QuotaPauses, "one device's throttling never pauses all sending")

	// After Retry-After, the device gets its pushes.
	pusher.setAnswer(func(notification.Message) error { return nil })
	clock.Advance(30 * time.Second)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, map[notification.DeliveryStatus]int{notification.StatusSent: 3}, store.statuses(hasPrefix("hot-")))
	}, waitFor, 5*time.Millisecond)
}

func TestThrottlingAcrossManyDevicesPausesAllSending(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	for i := range 10 {
		store.add(fmt.Sprintf("device-%02d", i), notification.PlatformAndroid, clock.Now())
	}
	pusher := newFakePusher(func(notification.Message) error {
		return sendErr(notification.ErrQuotaExceeded, "QUOTA_EXCEEDED", 0)
	})
	cfg := senderConfig(clock) // QuotaDevices 3 in QuotaWindow 2s, QuotaPause 5s by default
	s := runSender(t, store, pusher, cfg)

	require.Eventually(t, func() bool { return s.Stats().QuotaPauses == 1 }, waitFor, 5*time.Millisecond)
	assert.Equal(t, 3, pusher.callsTo(hasPrefix("device-")), "three devices throttled in a row: the quota is the project's")
	time.Sleep(200 * time.Millisecond) // the clock stands still: the pause must hold
	assert.Equal(t, 3, pusher.callsTo(hasPrefix("device-")), "no push while all sending is paused")
	assert.Equal(t, int64(3), s.Stats().QuotaExceeded)

	// When the pause ends and the quota is back, everything goes out.
	pusher.setAnswer(func(notification.Message) error { return nil })
	clock.Advance(5 * time.Second)
	require.Eventually(t, func() bool { return pusher.callsTo(hasPrefix("device-")) > 3 }, waitFor, 5*time.Millisecond)
	clock.Advance(10 * time.Second) // the throttled deliveries' own retry time (BaseDelay)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, map[notification.DeliveryStatus]int{notification.StatusSent: 10}, store.statuses(hasPrefix("device-")))
	}, waitFor, 5*time.Millisecond)
	assert.Equal(t, 13, pusher.callsTo(hasPrefix("device-")))
}

func TestExpiredAPNsKeyBacksOffIOSAndKeepsAndroidAtFullSpeed(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	t0 := clock.Now()
	store := newMemStore()
	for i := range 10 {
		store.add(fmt.Sprintf("ios-%02d", i), notification.PlatformIOS, t0)
		store.add(fmt.Sprintf("android-%02d", i), notification.PlatformAndroid, t0)
	}
	apnsKeyExpired := func(msg notification.Message) error {
		if msg.Platform == notification.PlatformIOS {
			return sendErr(notification.ErrPlatformAuthRejected, "THIRD_PARTY_AUTH_ERROR", 0)
		}
		return nil
	}
	pusher := newFakePusher(apnsKeyExpired)
	cfg := senderConfig(clock) // PlatformPause 10s, doubling
	s := runSender(t, store, pusher, cfg)
	isIOS := hasPrefix("ios-")

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, map[notification.DeliveryStatus]int{notification.StatusSent: 10}, store.statuses(hasPrefix("android-")))
		assert.Equal(c, map[notification.DeliveryStatus]int{
			notification.StatusRetryScheduled: 1, notification.StatusPending: 9,
		}, store.statuses(isIOS))
	}, waitFor, 5*time.Millisecond, "android goes on; ios is retried later, not failed")
	assert.Equal(t, 1, pusher.callsTo(isIOS), "one rejection pauses every ios push")
	first := store.delivery(1) // ios-00, the first pushed
	assert.Equal(t, 1, first.Attempts(), "the rejected push counts an attempt")
	assert.Equal(t, "THIRD_PARTY_AUTH_ERROR", first.ErrorCode())
	assert.Equal(t, t0.Add(10*time.Second), first.DueAt(), "retried when the pause ends")
	st := s.Stats()
	assert.Equal(t, int64(1), st.PlatformPauses)
	assert.Equal(t, int64(1), st.ConfigAlarms)
	assert.Zero(t, st.Failed)

	// The pause ends: one probe, rejected again, doubles the pause.
	clock.Advance(10 * time.Second)
	require.Eventually(t, func() bool { return s.Stats().PlatformPauses == 2 }, waitFor, 5*time.Millisecond)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		counts := store.statuses(isIOS)
		assert.Equal(c, 10, counts[notification.StatusRetryScheduled]+counts[notification.StatusPending])
	}, waitFor, 5*time.Millisecond)
	assert.Equal(t, 2, pusher.callsTo(isIOS), "one probe when the pause ends")

	// The operator fixes the key. Nothing goes out before the doubled pause
	// ends; then the probe succeeds and every held push follows.
	pusher.setAnswer(func(notification.Message) error { return nil })
	clock.Advance(19 * time.Second)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, 2, pusher.callsTo(isIOS), "the pause doubled to 20s")
	clock.Advance(time.Second)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, map[notification.DeliveryStatus]int{notification.StatusSent: 10}, store.statuses(isIOS))
	}, waitFor, 5*time.Millisecond, "no retry by hand: held and rejected pushes all go out")
	assert.Equal(t, 12, pusher.callsTo(isIOS), "two rejected attempts, then one push each")
}

func TestTokenOfAnotherFirebaseProjectIsPrunedWithAnAlarm(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	// FCM accepts a push first: this server's project is the right one.
	store.add("token-ok", notification.PlatformAndroid, clock.Now())
	foreign := store.add("token-of-another-project", notification.PlatformAndroid, clock.Now())
	pusher := newFakePusher(func(msg notification.Message) error {
		if msg.Token == "token-of-another-project" {
			return sendErr(notification.ErrSenderMismatch, "SENDER_ID_MISMATCH", 0)
		}
		return nil
	})
	var logs logBuffer
	cfg := senderConfig(clock)
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	s := runSender(t, store, pusher, cfg)

	require.Eventually(t, func() bool {
		return store.delivery(foreign).Status() == notification.StatusTokenPruned
	}, waitFor, 5*time.Millisecond)
	assert.Equal(t, "SENDER_ID_MISMATCH", store.delivery(foreign).ErrorCode())
	assert.False(t, store.hasToken("token-of-another-project"), "the useless token is deleted")
	assert.True(t, store.hasToken("token-ok"))
	st := s.Stats()
	assert.Equal(t, int64(1), st.TokensPruned)
	assert.Equal(t, int64(1), st.ConfigAlarms)
	assert.Zero(t, st.Failed)
	alarms := logs.lines(t, "configuration alarm")
	require.Len(t, alarms, 1)
	assert.Equal(t, "ERROR", alarms[0]["level"])
	assert.Equal(t, "SENDER_ID_MISMATCH", alarms[0]["code"])
	assert.NotContains(t, logs.String(), "token-of-another-project")
}

// A server running with another Firebase project's credentials gets
// SENDER_ID_MISMATCH for every token it pushes to. Were each answer taken at
// its word, the whole registry would be deleted; the tokens are kept, the
// deliveries given back with no attempt counted, and sending pauses.
func TestAServerWithAnotherProjectsCredentialsPrunesNoToken(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	var ids []int64
	for i := range 10 {
		ids = append(ids, store.add(fmt.Sprintf("token-%02d", i), notification.PlatformAndroid, clock.Now()))
	}
	pusher := newFakePusher(func(notification.Message) error {
		return sendErr(notification.ErrSenderMismatch, "SENDER_ID_MISMATCH", 0)
	})
	var logs logBuffer
	cfg := senderConfig(clock)
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	s := runSender(t, store, pusher, cfg)

	// QuotaDevices (3) devices answering that and nothing else pause all
	// sending; the rest wait for the pause, then meet the same answer.
	all := func(string) bool { return true }
	for round := 1; round <= 3; round++ {
		require.Eventually(t, func() bool { return s.Stats().Released >= int64(3*round) }, waitFor, 5*time.Millisecond)
		calls := pusher.callsTo(all)
		time.Sleep(50 * time.Millisecond)
		assert.Equal(t, calls, pusher.callsTo(all), "round %d: sending paused", round)
		clock.Advance(cfg.QuotaPause + 5*time.Second) // QuotaPause's default
	}
	st := s.Stats()
	assert.Zero(t, st.TokensPruned)
	assert.Zero(t, st.Failed)
	for i, id := range ids {
		d := store.delivery(id)
		assert.NotEqual(t, notification.StatusTokenPruned, d.Status(), "delivery %d", i)
		assert.Zero(t, d.Attempts(), "no attempt counted: nothing is wrong with the delivery")
		assert.True(t, store.hasToken(fmt.Sprintf("token-%02d", i)), "token %d kept", i)
	}
	alarms := logs.lines(t, "credentials may belong to another Firebase project")
	require.NotEmpty(t, alarms)
	assert.Equal(t, "ERROR", alarms[0]["level"])
}

func TestRepeatedAlarmsLogOneLinePerInterval(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	store.add("accepted-first", notification.PlatformAndroid, clock.Now()) // vouches for the project
	for i := range 20 {
		store.add(fmt.Sprintf("foreign-%02d", i), notification.PlatformAndroid, clock.Now())
		store.add(fmt.Sprintf("bad-message-%02d", i), notification.PlatformAndroid, clock.Now())
	}
	pusher := newFakePusher(func(msg notification.Message) error {
		switch {
		case strings.HasPrefix(msg.Token, "foreign-"):
			return sendErr(notification.ErrSenderMismatch, "SENDER_ID_MISMATCH", 0)
		case strings.HasPrefix(msg.Token, "bad-message-"):
			return sendErr(notification.ErrMessageRejected, "INVALID_ARGUMENT", 0)
		}
		return nil
	})
	var logs logBuffer
	cfg := senderConfig(clock) // AlarmLogInterval 10s
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	s := runSender(t, store, pusher, cfg)

	require.Eventually(t, func() bool {
		st := s.Stats()
		return st.TokensPruned == 20 && st.Failed == 20
	}, waitFor, 5*time.Millisecond)
	withCode := func(code string) []map[string]any {
		return logs.linesWhere(t, func(rec map[string]any) bool { return rec["code"] == code })
	}
	require.Len(t, withCode("SENDER_ID_MISMATCH"), 1, "twenty alarms, one line")
	require.Len(t, withCode("INVALID_ARGUMENT"), 1, "twenty failures, one line")

	// After the interval, the next push writes what was counted meanwhile.
	clock.Advance(10 * time.Second)
	store.add("healthy", notification.PlatformAndroid, clock.Now())
	s.Wake()
	require.Eventually(t, func() bool { return len(withCode("INVALID_ARGUMENT")) == 2 }, waitFor, 5*time.Millisecond)
	for _, code := range []string{"SENDER_ID_MISMATCH", "INVALID_ARGUMENT"} {
		lines := withCode(code)
		require.Len(t, lines, 2, code)
		assert.EqualValues(t, 1, lines[0]["count"], code)
		assert.EqualValues(t, 19, lines[1]["count"], code)
	}
	out := logs.String()
	for _, secret := range []string{"foreign-", "bad-message-", "healthy", "accepted-first", "secret title", "secret body"} {
		assert.NotContains(t, out, secret, "never a token or a body in a log line")
	}
}

// SENDER_ID_MISMATCH on every token keeps the registry whatever the pace of
// the pushes: a quiet server that FCM once accepted and that now gets that
// answer for every token (its project changed under it, or FCM misreads
// them) prunes no more tokens than the answers it takes to see that every
// answer is the same, even when fewer than QuotaDevices of them arrive
// within QuotaWindow.
func TestSenderIDMismatchOnEveryTokenKeepsTheRegistryOnAQuietServer(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	ok := store.add("token-ok", notification.PlatformAndroid, clock.Now())
	pusher := newFakePusher(func(notification.Message) error { return nil })
	cfg := senderConfig(clock)
	s := runSender(t, store, pusher, cfg)
	require.Eventually(t, func() bool { return store.delivery(ok).Status() == notification.StatusSent },
		waitFor, 5*time.Millisecond)

	pusher.setAnswer(func(notification.Message) error {
		return sendErr(notification.ErrSenderMismatch, "SENDER_ID_MISMATCH", 0)
	})
	const n = 12
	gap := 3 * time.Second // one push per gap: fewer than QuotaDevices (3) within QuotaWindow (2s)
	var ids []int64
	for i := range n {
		ids = append(ids, store.add(fmt.Sprintf("token-%02d", i), notification.PlatformAndroid,
			clock.Now().Add(time.Duration(i+1)*gap)))
	}
	for i, id := range ids {
		clock.Advance(gap)
		tok := fmt.Sprintf("token-%02d", i)
		require.Eventually(t, func() bool {
			return pusher.callsTo(func(s string) bool { return s == tok }) >= 1 &&
				store.delivery(id).Status() != notification.StatusClaimed
		}, waitFor, 5*time.Millisecond, "push %d", i)
	}
	kept := 0
	for i := range n {
		if store.hasToken(fmt.Sprintf("token-%02d", i)) {
			kept++
		}
	}
	bound := 2*3 - 1 // 2×QuotaDevices answers, the success among them, tell every answer is the same
	assert.GreaterOrEqual(t, kept, n-bound, "pruned %d of %d tokens, TokensPruned %d", n-kept, n, s.Stats().TokensPruned)
}

// Foreign tokens among healthy ones never pause sending: a registry holding
// many tokens of another Firebase project (an app that moved projects) gets
// SENDER_ID_MISMATCH for a good share of its pushes, and six of them in a
// row happen by chance. While FCM keeps accepting the others, the project
// is evidently right: the foreign tokens are pruned, or at worst given back,
// and the healthy pushes go on without waiting out QuotaPause.
func TestForeignTokensAmongHealthyOnesNeverPauseSending(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	rng := rand.New(rand.NewPCG(1, 2))
	var healthy []int64
	run, longest := 0, 0
	for i := range 200 {
		if i > 0 && rng.IntN(2) == 0 { // half the registry is another project's
			store.add(fmt.Sprintf("foreign-%03d", i), notification.PlatformAndroid, clock.Now())
			run++
			longest = max(longest, run)
			continue
		}
		run = 0
		healthy = append(healthy, store.add(fmt.Sprintf("healthy-%03d", i), notification.PlatformAndroid, clock.Now()))
	}
	require.GreaterOrEqual(t, longest, 6, "the pattern holds a run of 2×QuotaDevices foreign tokens")
	pusher := newFakePusher(func(msg notification.Message) error {
		if strings.HasPrefix(msg.Token, "foreign-") {
			return sendErr(notification.ErrSenderMismatch, "SENDER_ID_MISMATCH", 0)
		}
		return nil
	})
	s := runSender(t, store, pusher, senderConfig(clock))

	// The clock never moves: a pause would hold the healthy pushes for good.
	sent := func() int {
		n := 0
		for _, id := range healthy {
			if store.delivery(id).Status() == notification.StatusSent {
				n++
			}
		}
		return n
	}
	assert.Eventually(t, func() bool { return sent() == len(healthy) }, waitFor, 5*time.Millisecond)
	assert.Equal(t, len(healthy), sent(), "healthy pushes sent; stats %+v", s.Stats())
}

// A platform paused for its rejected APNs or web push credentials sends its
// pushes again once they are accepted, whatever its probe met: a probe that
// meets a token of another Firebase project before FCM accepted any push
// (the token kept, the delivery given back) lets the next push probe, as any
// other outcome does, instead of leaving the platform waiting for good.
func TestAPlatformProbeAnsweredSenderIDMismatchNeverStallsThePlatform(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	first := store.add("ios-1", notification.PlatformIOS, clock.Now())
	pusher := newFakePusher(func(notification.Message) error {
		return sendErr(notification.ErrPlatformAuthRejected, "THIRD_PARTY_AUTH_ERROR", 0)
	})
	s := runSender(t, store, pusher, senderConfig(clock))
	require.Eventually(t, func() bool { return s.Stats().PlatformPauses == 1 }, waitFor, 5*time.Millisecond)
	require.Eventually(t, func() bool { return store.delivery(first).Status() != notification.StatusClaimed },
		waitFor, 5*time.Millisecond)

	// The pause (PlatformPause, 10s) ends; the probe meets a token of another
	// project before any push was accepted: kept and given back.
	pusher.setAnswer(func(notification.Message) error {
		return sendErr(notification.ErrSenderMismatch, "SENDER_ID_MISMATCH", 0)
	})
	clock.Advance(11 * time.Second)
	isFirst := func(tok string) bool { return tok == "ios-1" }
	require.Eventually(t, func() bool {
		return pusher.callsTo(isFirst) == 2 && store.delivery(first).Status() != notification.StatusClaimed
	}, waitFor, 5*time.Millisecond)
	require.True(t, store.hasToken("ios-1"), "kept: no push of this sender accepted yet")

	// From now on FCM accepts every push: the platform's pushes go out.
	pusher.setAnswer(func(notification.Message) error { return nil })
	var ids []int64
	for i := 2; i <= 4; i++ {
		ids = append(ids, store.add(fmt.Sprintf("ios-%d", i), notification.PlatformIOS, clock.Now()))
	}
	ids = append(ids, first)
	assert.Eventually(t, func() bool {
		clock.Advance(time.Second)
		for _, id := range ids {
			if store.delivery(id).Status() != notification.StatusSent {
				return false
			}
		}
		return true
	}, waitFor, 5*time.Millisecond, "iOS pushes resume")
}
