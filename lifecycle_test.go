package herald_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// logRecorder is a slog handler that keeps every record, for tests that
// assert on what Herald logged.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
	attrs   []slog.Attr
	parent  *logRecorder
}

func (l *logRecorder) root() *logRecorder {
	if l.parent != nil {
		return l.parent.root()
	}
	return l
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(l.attrs...)
	root := l.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	root.records = append(root.records, r)
	return nil
}

func (l *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecorder{attrs: append(append([]slog.Attr{}, l.attrs...), attrs...), parent: l.root()}
}

func (l *logRecorder) WithGroup(string) slog.Handler { return l }

// since returns the records logged from the n-th on, at level or above.
func (l *logRecorder) since(n int, level slog.Level) []slog.Record {
	root := l.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	var out []slog.Record
	for _, r := range root.records[n:] {
		if r.Level >= level {
			out = append(out, r)
		}
	}
	return out
}

func (l *logRecorder) count() int {
	root := l.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	return len(root.records)
}

// forwardTo accepts connections on ln and pipes each to target, until ln
// is closed: a database that "comes up" on ln's port.
func forwardTo(t *testing.T, ln net.Listener, target string) {
	t.Helper()
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			mu.Lock()
			open = append(open, client, server)
			mu.Unlock()
			conns.Add(2)
			go func() { defer conns.Done(); _, _ = io.Copy(server, client); server.Close() }()
			go func() { defer conns.Done(); _, _ = io.Copy(client, server); client.Close() }()
		}
	}()
}

func TestHeraldStartedWhileTheDatabaseIsDownDeliversOnceItComesUp(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	tokens := h.registerTokens("author", 2)

	// A pool on a port where nothing listens yet.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	downPort := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	cfg := h.pool.Config()
	realAddr := net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = "127.0.0.1", uint16(downPort)
	cfg.ConnConfig.ConnectTimeout = time.Second
	down, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(down.Close)
	client, err := herald.NewFCM(context.Background(), h.fake.ProjectID(), h.fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	hd, err := herald.New(down, client, rules, fastConfig())
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- hd.Run(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("Run returned while the database was down instead of waiting for it: %v", err)
	case <-time.After(2 * time.Second):
	}

	// The database comes up.
	ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(downPort)))
	require.NoError(t, err, "the port was taken meanwhile")
	forwardTo(t, ln, realAddr)
	n := h.raise(true, comment("m1", "ann", "author"))[0]
	testutil.WaitDelivered(t, h.pool, n.ID(), 30*time.Second)
	for _, tok := range tokens {
		assert.Len(t, h.fake.AcceptedFor(tok), 1, tok)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned before its context ended: %v", err)
	default:
	}
	cancel()
	require.NoError(t, <-done)
}

func TestRunTwiceAtOnceReturnsAnErrorAndSendsNothingTwice(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	tokens := h.registerTokens("author", 3)
	h.run()
	first := h.raise(true, comment("m1", "ann", "author"))[0]
	testutil.WaitDelivered(t, h.pool, first.ID(), 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := h.herald.Run(ctx)
	require.ErrorIs(t, err, herald.ErrAlreadyRunning)

	// The first Run goes on, and nothing was pushed twice.
	second := h.raise(true, comment("m2", "ann", "author"))[0]
	testutil.WaitDelivered(t, h.pool, second.ID(), 10*time.Second)
	testutil.WaitIdle(t, h.pool, 10*time.Second)
	for _, tok := range tokens {
		assert.Len(t, h.fake.AcceptedFor(tok), 2, tok)
	}
}

func TestRunAfterRunReturnedDeliversAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	tokens := h.registerTokens("author", 3)
	for round, id := range []string{"m1", "m2", "m3"} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.herald.Run(ctx) }()
		n := h.raise(true, comment(id, "ann", "author"))[0]
		testutil.WaitDelivered(t, h.pool, n.ID(), 15*time.Second)
		cancel()
		require.NoError(t, <-done, "round %d", round)
	}
	for _, tok := range tokens {
		assert.Len(t, h.fake.AcceptedFor(tok), 3, tok)
	}
}

func TestANormalShutdownUnderLoadLogsNothingAboveInfo(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	cfg := fastConfig()
	cfg.Logger = slog.New(logs)
	// Each of the author's devices gets hundreds of pushes a second, far
	// over FCM's per-device limits, which would hold most of them back.
	cfg.Sender.DevicePerMinute, cfg.Sender.DevicePerHour = -1, -1
	h := newHarness(t, cfg)
	h.registerTokens("author", 20)
	for round := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.herald.Run(ctx) }()
		// Events keep coming while Run stops, so that the relay is in the
		// middle of a batch and the sender in the middle of pushes.
		stop, raised := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(raised)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				h.raise(true, comment(fmt.Sprintf("r%d-m%d", round, i), "ann", "author"))
				// A steady stream, not as fast as the machine goes: the
				// backlog left for the last run stays the same size
				// however loaded the machine is.
				time.Sleep(5 * time.Millisecond)
			}
		}()
		time.Sleep(1500 * time.Millisecond)
		before := logs.count()
		cancel()
		require.NoError(t, <-done)
		close(stop)
		<-raised
		for _, r := range logs.since(before, slog.LevelWarn) {
			t.Errorf("round %d: shutdown logged %s %q", round, r.Level, r.Message)
			r.Attrs(func(a slog.Attr) bool { t.Logf("  %s=%v", a.Key, a.Value); return true })
		}
	}
	// Whatever was raised is delivered by the next run, once.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.herald.Run(ctx) }()
	testutil.WaitIdle(t, h.pool, 60*time.Second)
	cancel()
	require.NoError(t, <-done)
	var deliveries, sent int
	require.NoError(t, h.pool.QueryRow(context.Background(),
		`SELECT count(*), count(*) FILTER (WHERE status = 'sent') FROM herald_deliveries`).Scan(&deliveries, &sent))
	t.Logf("%d deliveries, %d sent", deliveries, sent)
	assert.Equal(t, deliveries, sent)
	assert.Equal(t, int64(sent), h.fake.AcceptedCount(), "no push twice")
	for _, r := range logs.since(0, slog.LevelError) {
		t.Errorf("a normal run logged %s %q", r.Level, r.Message)
		r.Attrs(func(a slog.Attr) bool { t.Logf("  %s=%v", a.Key, a.Value); return true })
	}
}
