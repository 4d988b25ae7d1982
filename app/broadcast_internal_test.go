package app

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run a BroadcastExpander whose timers fire only when the test
// fires them: every wait it asks for is recorded, so "it waited" and "it
// did not wait" are facts, not durations.

// scriptedBroadcasts answers each ExpandBroadcastChunk with the next step
// of its script, then with the last step forever.
type scriptedBroadcasts struct {
	mu     sync.Mutex
	script []chunkAnswer
	calls  int
}

type chunkAnswer struct {
	found bool
	err   error
	chunk BroadcastChunk // when found, what it did
}

func (s *scriptedBroadcasts) ExpandBroadcastChunk(context.Context, int) (BroadcastChunk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.script[min(s.calls, len(s.script)-1)]
	s.calls++
	if a.found {
		c := a.chunk
		c.Found = true
		if c.Created == 0 && !c.Held {
			c.Created = 10
		}
		return c, a.err
	}
	return BroadcastChunk{}, a.err
}

func (s *scriptedBroadcasts) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// manualTimers records each wait asked for; the test fires them.
type manualTimers struct {
	waits chan timerWait
}

type timerWait struct {
	d    time.Duration
	fire chan time.Time
}

func (m *manualTimers) after(d time.Duration) <-chan time.Time {
	w := timerWait{d: d, fire: make(chan time.Time, 1)}
	m.waits <- w
	return w.fire
}

// next returns the next wait the expander asked for.
func (m *manualTimers) next(t *testing.T) timerWait {
	t.Helper()
	select {
	case w := <-m.waits:
		return w
	case <-time.After(10 * time.Second):
		t.Fatal("the expander never waited")
		return timerWait{}
	}
}

func runExpander(t *testing.T, store BroadcastStore, cfg BroadcastExpanderConfig) (*BroadcastExpander, *manualTimers) {
	t.Helper()
	e, err := NewBroadcastExpander(store, cfg)
	require.NoError(t, err)
	timers := &manualTimers{waits: make(chan timerWait, 100)}
	e.after = timers.after
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		assert.NoError(t, e.Run(ctx))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return e, timers
}

func TestTheExpanderKeepsExpandingWithoutWaitingWhileItFindsChunks(t *testing.T) {
	t.Parallel()
	store := &scriptedBroadcasts{script: []chunkAnswer{{found: true}, {found: true}, {found: true}, {found: true}, {found: false}}}
	_, timers := runExpander(t, store, BroadcastExpanderConfig{PollInterval: time.Hour})

	w := timers.next(t)

	assert.Equal(t, time.Hour, w.d, "the first wait is the idle poll")
	assert.Equal(t, 5, store.callCount(), "four chunks found back to back, then one empty look")
}

func TestTheExpanderBacksOffOnErrorsAndWakeDoesNotCutTheBackoffShort(t *testing.T) {
	t.Parallel()
	store := &scriptedBroadcasts{script: []chunkAnswer{{err: errors.New("database down")}}}
	e, timers := runExpander(t, store, BroadcastExpanderConfig{PollInterval: time.Hour})

	var waits []time.Duration
	for i := range 8 {
		w := timers.next(t)
		waits = append(waits, w.d)
		if i == 0 {
			e.Wake()
			time.Sleep(10 * time.Millisecond) // give a wrong implementation the chance to look again
			assert.Equal(t, 1, store.callCount(), "a wake does not end the backoff")
		}
		w.fire <- time.Time{}
	}
	timers.next(t) // the ninth look failed too

	window := 100 * time.Millisecond
	for i, d := range waits {
		assert.GreaterOrEqual(t, d, window/2, "wait %d", i)
		assert.LessOrEqual(t, d, window, "wait %d", i)
		assert.NotEqual(t, time.Hour, d, "an error is retried with backoff, not at the idle poll")
		window = min(2*window, 5*time.Second)
	}
	assert.Equal(t, 9, store.callCount())
}

func TestAnIdleExpanderSleepsUntilWokenOrItsPollInterval(t *testing.T) {
	t.Parallel()
	store := &scriptedBroadcasts{script: []chunkAnswer{{found: false}}}
	e, timers := runExpander(t, store, BroadcastExpanderConfig{PollInterval: time.Hour})

	w := timers.next(t)
	require.Equal(t, time.Hour, w.d)
	assert.Equal(t, 1, store.callCount(), "it sleeps when idle")

	e.Wake()
	w = timers.next(t)
	assert.Equal(t, 2, store.callCount(), "a wake makes it look again at once")

	w.fire <- time.Time{}
	timers.next(t)
	assert.Equal(t, 3, store.callCount(), "and so does the poll interval passing")
}

func TestAnExpanderThatFoundWorkAfterErrorsBacksOffFromTheStartAgain(t *testing.T) {
	t.Parallel()
	boom := chunkAnswer{err: errors.New("database down")}
	store := &scriptedBroadcasts{script: []chunkAnswer{boom, boom, boom, boom, {found: true}, boom}}
	_, timers := runExpander(t, store, BroadcastExpanderConfig{PollInterval: time.Hour})
	for range 4 {
		timers.next(t).fire <- time.Time{}
	}
	w := timers.next(t)
	assert.LessOrEqual(t, w.d, 100*time.Millisecond, "the backoff starts over after a success")
}

// settableClock is a clock the test moves.
type settableClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *settableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *settableClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Refused deliveries used to be counted on the broadcast and nowhere else:
// an operator saw them only by looking at Status. They are logged as a
// warning, but a host constraint refusing a million tokens, or a freeze
// holding every broadcast, writes one line of each kind per interval with
// the count of chunks it stands for, not a line per chunk.
func TestRefusedDeliveriesAreLoggedOncePerIntervalWithTheirCount(t *testing.T) {
	t.Parallel()
	id := uuid.New()
	refused := chunkAnswer{found: true, chunk: BroadcastChunk{NotificationID: id, Created: 998, Refused: 2,
		Refusal: "sha256:abc: deliveries to sha256:abc are refused"}}
	held := chunkAnswer{found: true, chunk: BroadcastChunk{NotificationID: id, Held: true, HeldFor: 4 * time.Second,
		Refusal: "sha256:def: deliveries are frozen"}}
	var script []chunkAnswer
	for range 500 {
		script = append(script, refused, held)
	}
	store := &scriptedBroadcasts{script: append(script, chunkAnswer{found: false})}
	clock := &settableClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	var buf bytes.Buffer
	e, timers := runExpander(t, store, BroadcastExpanderConfig{PollInterval: time.Hour, Now: clock.Now,
		Logger: slog.New(slog.NewJSONHandler(&buf, nil))})

	timers.next(t)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2, "the first of each kind at once, the others counted:\n%s", buf.String())
	for _, l := range lines {
		assert.Contains(t, l, `"level":"WARN"`)
		assert.Contains(t, l, id.String(), "the broadcast's notification is named")
		assert.Contains(t, l, `"count":1`)
	}
	assert.Contains(t, lines[0], `"refused":2`, "how many of the chunk's deliveries were refused")
	assert.Contains(t, lines[0], "deliveries to sha256:abc are refused", "and why")
	assert.Contains(t, lines[1], "held")
	assert.Contains(t, lines[1], "deliveries are frozen")

	clock.Advance(BroadcastWarningInterval)
	e.Wake()
	timers.next(t)
	lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 4, "the interval's refusals in one line of each kind:\n%s", buf.String())
	assert.Contains(t, lines[2]+lines[3], `"count":499`)
}
