package app

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// Unit tests of the sender's rule for its recorder's pace (recorderRoom),
// on a sender that never runs, with explicit times.

type idleStore struct{ DeliveryStore }

type pusherWithin struct {
	Pusher
	timeout time.Duration
}

func (p pusherWithin) PushTimeout() time.Duration { return p.timeout }

// roomSender is a sender on a clock standing at t0 whose pushes end within
// 3 s, with 10 s leases, batches of 20 and a 100 ms flush interval: a push
// starts with at least 5 s of its lease left (half of it), and the
// recorder has 5 s - 3 s - 100 ms = 1.9 s to write its outcome.
func roomSender(t *testing.T) *Sender {
	t.Helper()
	s, err := NewSender(idleStore{}, pusherWithin{timeout: 3 * time.Second}, SenderConfig{
		Lease: 10 * time.Second, BatchSize: 20, FlushInterval: 100 * time.Millisecond,
		Now: func() time.Time { return t0 },
	})
	require.NoError(t, err)
	require.Equal(t, 1900*time.Millisecond, s.recordWithin)
	return s
}

// The recorder writes a batch in 500 ms, so 1.9 s is three batches: the
// batch in hand and two more, or one alone when nothing is ahead.
func TestAPushStartsOnlyIfTheBatchInHandAndTheOutcomesAheadOfItCanBeRecordedBeforeItsLeaseEnds(t *testing.T) {
	t.Parallel()
	const batch = 500 * time.Millisecond
	tests := []struct {
		name             string
		took             time.Duration // the last batches
		inHandFor        time.Duration // 0: the recorder holds no batch
		reserved, queued int           // pushes holding room; outcomes waiting
		want             room
	}{
		{name: "nothing ahead: a batch of its own", took: batch, want: roomPush},
		{name: "the 40th outcome: two batches behind the one in hand", took: batch, inHandFor: time.Millisecond,
			reserved: 30, queued: 9, want: roomPush},
		{name: "the 41st outcome: three batches behind the one in hand", took: batch, inHandFor: time.Millisecond,
			reserved: 30, queued: 10, want: roomWait},
		{name: "the recorder holds nothing yet but may take a batch ahead of it", took: batch,
			reserved: 40, want: roomWait},
		{name: "outcomes waiting count as pushes holding room", took: batch, queued: 40, want: roomWait},
		{name: "a batch in hand slower than the last ones counts as long as it has taken", took: batch,
			inHandFor: time.Second, want: roomWait},
		{name: "a recorder too slow for any push: not even alone", took: 2 * time.Second, want: roomRelease},
		{name: "too slow, something ahead: waits for it", took: 2 * time.Second, reserved: 1, want: roomWait},
		{name: "too slow, a batch in hand: waits for it", took: batch, inHandFor: 2 * time.Second, want: roomWait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := roomSender(t)
			s.batchTook.Store(int64(tt.took))
			if tt.inHandFor > 0 {
				s.handSince.Store(t0.Add(-tt.inHandFor).UnixNano())
			}
			s.outcomes = make(chan *notification.Delivery, tt.queued)
			for range tt.queued {
				s.outcomes <- &notification.Delivery{}
			}
			assert.Equal(t, tt.want, s.recorderRoom(int64(tt.reserved)))
		})
	}
}

// A batch's time is measured on the sender's clock, which its leases are
// reckoned in; a step of that clock is not recording time. A slow batch
// counts at once, a fast one once it is not the exception.
func TestTheRecordersPaceIsTheLongerOfItsLastTwoBatchesOnTheSendersClock(t *testing.T) {
	t.Parallel()
	s := roomSender(t)
	assert.Equal(t, int64(recordRoundTrip), s.batchTook.Load(), "before any batch: a round trip")
	s.timeBatch(200*time.Millisecond, time.Millisecond)
	assert.Equal(t, int64(200*time.Millisecond), s.batchTook.Load(), "the sender's clock, not real time")
	s.timeBatch(2*time.Second, time.Second)
	assert.Equal(t, int64(2*time.Second), s.batchTook.Load())
	s.timeBatch(100*time.Millisecond, 100*time.Millisecond)
	assert.Equal(t, int64(2*time.Second), s.batchTook.Load(), "one fast batch does not undo a slow one")
	s.timeBatch(100*time.Millisecond, 100*time.Millisecond)
	assert.Equal(t, int64(100*time.Millisecond), s.batchTook.Load())
	s.timeBatch(-time.Hour, 30*time.Millisecond)
	s.timeBatch(time.Hour, 40*time.Millisecond)
	assert.Equal(t, int64(40*time.Millisecond), s.batchTook.Load(), "clock steps back or past a lease: real time")
}

// A worker that must wait for the recorder holds no room and takes no
// claim; it goes on when the recorder takes or writes a batch, or gives up
// when its context ends, holding nothing.
func TestAWorkerWaitingForTheRecorderHoldsNothingAndGoesOnAtItsProgress(t *testing.T) {
	t.Parallel()
	s := roomSender(t)
	s.cfg.FlushInterval = time.Hour // only the recorder's progress wakes it
	s.batchTook.Store(int64(500 * time.Millisecond))
	s.reserved.Store(40)

	got := make(chan room, 1)
	go func() { got <- s.reserveRecorder(context.Background()) }()
	select {
	case r := <-got:
		t.Fatalf("went on with the recorder behind: %v", r)
	case <-time.After(50 * time.Millisecond):
	}
	assert.Equal(t, int64(40), s.reserved.Load(), "took no room while waiting")
	s.reserved.Store(10) // the recorder took outcomes
	s.recorded.signal()
	require.Equal(t, roomPush, <-got)
	assert.Equal(t, int64(11), s.reserved.Load())

	s.reserved.Store(40)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { got <- s.reserveRecorder(ctx) }()
	cancel()
	assert.Equal(t, roomWait, <-got)
	assert.Equal(t, int64(40), s.reserved.Load())
}

// A worker may have reserved its room before it waited for a claim. If the
// batch the recorder holds has meanwhile taken longer than the outcome
// alone could wait for, the push waits for that batch to be written; it
// waits for nothing else.
func TestAPushWhoseRoomWasReservedEarlierWaitsForASlowBatchInHand(t *testing.T) {
	t.Parallel()
	s := roomSender(t)
	s.reserved.Store(1000) // other workers' room does not hold it back
	assert.True(t, s.awaitBatchInHand(context.Background()), "no batch in hand")
	s.handSince.Store(t0.Add(-900 * time.Millisecond).UnixNano())
	assert.True(t, s.awaitBatchInHand(context.Background()), "in hand for less than half of 1.9 s")

	s.handSince.Store(t0.Add(-time.Second).UnixNano())
	done := make(chan bool, 1)
	go func() { done <- s.awaitBatchInHand(context.Background()) }()
	select {
	case <-done:
		t.Fatal("pushed behind a batch in hand for more than half of 1.9 s")
	case <-time.After(50 * time.Millisecond):
	}
	s.handSince.Store(0) // written
	s.recorded.signal()
	assert.True(t, <-done)

	s.handSince.Store(t0.Add(-time.Second).UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- s.awaitBatchInHand(ctx) }()
	cancel()
	assert.False(t, <-done)
}
