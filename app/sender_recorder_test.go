package app_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// The sender's promise to its recorder: a push starts only if its outcome
// can be recorded before its lease ends, so that no other claim takes the
// delivery over and pushes it again. These tests run on the fakes of
// sender_fakes_test.go with a clock that moves only when told: a slow
// database is one whose every Record moves the sender's clock on.

// slowRecords is a database whose every Record takes took on the sender's
// clock: the clock moves on by took while the batch is written, and the
// batch commits at the end. It notes each push whose outcome committed once
// its lease had ended, when another claim could have taken the delivery and
// pushed it again.
type slowRecords struct {
	*memStore
	clock *fakeClock
	took  time.Duration

	mu   sync.Mutex
	late []string // tokens
}

func (s *slowRecords) Record(ctx context.Context, ds []*notification.Delivery) (int, error) {
	s.clock.Advance(s.took)
	now := s.clock.Now()
	for _, d := range ds {
		stored := s.delivery(d.ID())
		current := stored.Status() == notification.StatusClaimed && stored.ClaimID() == d.ClaimID()
		if d.Status() == notification.StatusSent && current && !stored.DueAt().After(now) {
			s.mu.Lock()
			s.late = append(s.late, d.Token())
			s.mu.Unlock()
		}
	}
	return s.memStore.Record(ctx, ds)
}

func (s *slowRecords) lateRecords() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.late...)
}

// gatedPusher is a TimedPusher whose answers can be held back: while held,
// each push waits until answer is called (FCM answering at the push's
// deadline, as far as the test moves the clock).
type gatedPusher struct {
	*fakePusher
	timeout time.Duration

	mu      sync.Mutex
	gate    chan struct{} // closed: pushes are answered at once
	waiting int           // pushes that waited for the gate
}

func newGatedPusher(timeout time.Duration) *gatedPusher {
	gate := make(chan struct{})
	close(gate)
	return &gatedPusher{fakePusher: newFakePusher(func(notification.Message) error { return nil }),
		timeout: timeout, gate: gate}
}

func (p *gatedPusher) PushTimeout() time.Duration { return p.timeout }

func (p *gatedPusher) Push(ctx context.Context, msg notification.Message) (string, error) {
	p.mu.Lock()
	gate := p.gate
	select {
	case <-gate:
	default:
		p.waiting++
	}
	p.mu.Unlock()
	<-gate
	return p.fakePusher.Push(ctx, msg)
}

// hold holds back the answers to the pushes from now on.
func (p *gatedPusher) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = make(chan struct{})
}

// answer answers the pushes held back, and those to come at once.
func (p *gatedPusher) answer() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// pushedTwice returns the tokens pushed more than once, with their counts.
func (p *gatedPusher) pushedTwice() map[string]int {
	p.fakePusher.mu.Lock()
	defer p.fakePusher.mu.Unlock()
	twice := map[string]int{}
	for tok, n := range p.calls {
		if n > 1 {
			twice[tok] = n
		}
	}
	return twice
}

func (p *gatedPusher) held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiting
}

// Every batch the recorder writes takes 500 ms, against 5 s leases and
// batches of 20: the recorder writes 40 outcomes a second, whatever FCM
// does. When FCM slows down, 200 workers could start 200 pushes at once;
// their outcomes, arriving together at the pushes' 1 s deadline, would take
// the recorder 5 s, and the later ones would be recorded after their leases
// had ended. The sender starts only the pushes whose outcomes the recorder
// can write in time, the batch it holds counted, and the others wait: it
// claims no more than its workers can take, gives nothing back, and pushes
// each device once.
func TestASlowRecorderNeverLetsALeaseEndBeforeItsPushIsRecorded(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &slowRecords{memStore: newMemStore(), clock: clock, took: 500 * time.Millisecond}
	pusher := newGatedPusher(time.Second)
	cfg := senderConfig(clock)
	cfg.MaxInFlight = 200
	cfg.BatchSize = 20
	cfg.Lease = 5 * time.Second

	// One push first: the sender sees how long the recorder takes.
	warmUp := store.add("warm-up", notification.PlatformAndroid, clock.Now())
	s := runSender(t, store, pusher, cfg)
	t.Cleanup(pusher.answer) // before the sender stops, should the test fail first
	require.Eventually(t, func() bool { return store.delivery(warmUp).Status() == notification.StatusSent },
		waitFor, time.Millisecond)

	// FCM slows down: each push is answered at its 1 s deadline.
	pusher.hold()
	const devices = 200
	for i := range devices {
		store.add(fmt.Sprintf("device-%03d", i), notification.PlatformAndroid, clock.Now())
	}
	s.Wake()
	require.Eventually(t, func() bool { return pusher.held() >= cfg.BatchSize }, waitFor, time.Millisecond)
	// Time for a sender that does not hold back to start every push it has
	// workers for (a sender that holds back starts no more however long).
	time.Sleep(200 * time.Millisecond)
	clock.Advance(time.Second)
	pusher.answer()

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, map[notification.DeliveryStatus]int{notification.StatusSent: devices},
			store.statuses(hasPrefix("device-")))
	}, waitFor, 5*time.Millisecond)
	assert.Empty(t, store.lateRecords(), "pushes recorded after their lease had ended")
	assert.Empty(t, pusher.pushedTwice(), "devices pushed more than once")
	st := s.Stats()
	assert.Zero(t, st.Released, "held back, not given back")
	assert.Equal(t, int64(devices+1), st.Claimed, "claimed once each")
}

var _ app.TimedPusher = (*gatedPusher)(nil)

// batchSizes is a database that notes the size of each batch it records.
// The first Record waits until first is closed; each one takes tookEach in
// real time, long enough for the recorder's flush interval to pass.
type batchSizes struct {
	*memStore
	first    chan struct{}
	tookEach time.Duration

	mu    sync.Mutex
	sizes []int
}

func (s *batchSizes) Record(ctx context.Context, ds []*notification.Delivery) (int, error) {
	s.mu.Lock()
	n := len(s.sizes)
	s.sizes = append(s.sizes, len(ds))
	s.mu.Unlock()
	if n == 0 {
		<-s.first
	}
	time.Sleep(s.tookEach)
	return s.memStore.Record(ctx, ds)
}

func (s *batchSizes) batches() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.sizes...)
}

// The sender counts the outcomes waiting for the recorder in batches: it
// relies on the recorder writing them in full batches, a short one only
// when nothing else waits. After a batch that took longer than the flush
// interval, the interval has passed; the outcomes that waited meanwhile
// still leave in full batches, not one or two at the flush interval.
func TestOutcomesThatWaitedForTheRecorderLeaveInFullBatches(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &batchSizes{memStore: newMemStore(), first: make(chan struct{}), tookEach: 10 * time.Millisecond}
	const devices = 220
	for i := range devices {
		store.add(fmt.Sprintf("device-%03d", i), notification.PlatformAndroid, clock.Now())
	}
	pusher := newFakePusher(func(notification.Message) error { return nil })
	cfg := senderConfig(clock)
	cfg.MaxInFlight = 200
	cfg.BatchSize = 20
	s := runSender(t, store, pusher, cfg)
	var written sync.Once
	writeFirst := func() { written.Do(func() { close(store.first) }) }
	t.Cleanup(writeFirst) // before the sender stops, should the test fail first

	// Every push is answered while the first batch is written: the other
	// outcomes wait for the recorder.
	require.Eventually(t, func() bool {
		return pusher.callsTo(hasPrefix("device-")) == devices && s.Stats().InFlight == 0
	}, waitFor, time.Millisecond)
	writeFirst()

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, map[notification.DeliveryStatus]int{notification.StatusSent: devices},
			store.statuses(hasPrefix("device-")))
	}, waitFor, 5*time.Millisecond)
	sizes := store.batches()
	require.GreaterOrEqual(t, len(sizes), 2)
	for i, n := range sizes[1 : len(sizes)-1] {
		assert.Equal(t, cfg.BatchSize, n, "batch %d of %v", i+1, sizes)
	}
}
