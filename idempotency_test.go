package herald_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

func keyed(user, title, key string) notification.Draft {
	d := draft(user, title)
	d.IdempotencyKey = key
	return d
}

func TestRaisingAnIdempotencyKeyAgainReturnsTheFirstNotificationAndPushesNothingMore(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	h.register("u", "tok-a", notification.PlatformAndroid)
	h.register("u", "tok-b", notification.PlatformIOS)
	h.run()

	first := h.notify(keyed("u", "order 42 shipped", "order-42-shipped"))
	h.waitStatuses(first, map[notification.DeliveryStatus]int{notification.StatusSent: 2}, 10*time.Second)
	// The host retries its transaction after a timeout: same key, same user.
	again := h.notify(keyed("u", "order 42 shipped (retry)", "order-42-shipped"))
	assert.Equal(t, first.ID(), again.ID(), "Raise returns the first notification")
	assert.Equal(t, "order 42 shipped", again.Content().Title)
	// The same key for another user is another notification.
	h.register("v", "tok-v", notification.PlatformAndroid)
	other := h.notify(keyed("v", "order 42 shipped", "order-42-shipped"))
	assert.NotEqual(t, first.ID(), other.ID())
	h.waitIdle(10 * time.Second)

	assert.Equal(t, 1, h.countRows(`SELECT count(*) FROM herald_notifications WHERE recipient = 'u'`))
	assert.Len(t, h.fake.AcceptedFor("tok-a"), 1)
	assert.Len(t, h.fake.AcceptedFor("tok-b"), 1)
	assert.Len(t, h.fake.AcceptedFor("tok-v"), 1)
	assert.Equal(t, []string{"order 42 shipped"}, h.inboxTitles("u"))
}

func TestOneKeyTwiceInOneRaiseIsOneNotification(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	h.register("u", "tok", notification.PlatformAndroid)
	h.run()
	ns := h.raise(true, Notify{Draft: keyed("u", "one", "k")}, Notify{Draft: keyed("u", "two", "k")})
	require.Len(t, ns, 2)
	assert.Equal(t, ns[0].ID(), ns[1].ID())
	h.waitIdle(10 * time.Second)
	assert.Len(t, h.fake.AcceptedFor("tok"), 1)
}

// TestTwoConcurrentTransactionsRaisingOneKeyResolveToOne: the second
// transaction's Raise waits for the first to end; if the first commits,
// the second gets its notification; if it rolls back, the second's own is
// the one. Either way: one notification, one push per device.
func TestTwoConcurrentTransactionsRaisingOneKeyResolveToOne(t *testing.T) {
	t.Parallel()
	for _, firstCommits := range []bool{true, false} {
		name := map[bool]string{true: "first commits", false: "first rolls back"}[firstCommits]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newDraftHarness(t, fastConfig())
			h.register("u", "tok", notification.PlatformAndroid)
			h.run()
			ctx := context.Background()

			tx1, err := h.pool.Begin(ctx)
			require.NoError(t, err)
			defer tx1.Rollback(ctx) //nolint:errcheck // no-op after commit
			ns1, err := h.herald.Raise(ctx, tx1, Notify{Draft: keyed("u", "from tx1", "form-submit-7")})
			require.NoError(t, err)

			var wg sync.WaitGroup
			var ns2 []*notification.Notification
			var err2 error
			raised := make(chan struct{})
			wg.Go(func() {
				err2 = pgx.BeginFunc(ctx, h.pool, func(tx2 pgx.Tx) error {
					var err error
					ns2, err = h.herald.Raise(ctx, tx2, Notify{Draft: keyed("u", "from tx2", "form-submit-7")})
					close(raised)
					return err
				})
			})
			select {
			case <-raised:
				t.Fatal("the second raise did not wait for the first transaction")
			case <-time.After(300 * time.Millisecond):
			}
			if firstCommits {
				require.NoError(t, tx1.Commit(ctx))
			} else {
				require.NoError(t, tx1.Rollback(ctx))
			}
			wg.Wait()
			require.NoError(t, err2)
			require.Len(t, ns2, 1)
			if firstCommits {
				assert.Equal(t, ns1[0].ID(), ns2[0].ID(), "the second gets the first's notification")
			} else {
				assert.NotEqual(t, ns1[0].ID(), ns2[0].ID(), "the first's is gone; the second's is the one")
			}
			h.waitIdle(10 * time.Second)
			assert.Equal(t, 1, h.countRows(`SELECT count(*) FROM herald_notifications`))
			pushes := h.fake.AcceptedFor("tok")
			require.Len(t, pushes, 1, "one push")
			want := map[bool]string{true: "from tx1", false: "from tx2"}[firstCommits]
			assert.Equal(t, want, pushes[0].Title)
		})
	}
}

// TestAnIdempotencyKeyHoldsForItsWindowOnly: the window is the database's
// time (see TestAnIdempotencyKeyHoldsOnEveryReplicaWhateverItsClock), so
// the test moves it by ageing what is stored: every notification's
// creation and window end move back by d, as if the database's clock had
// moved on by d.
func TestAnIdempotencyKeyHoldsForItsWindowOnly(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Raise.IdempotencyWindow = time.Hour
	h := newDraftHarness(t, cfg)
	advance := func(d time.Duration) {
		_, err := h.pool.Exec(context.Background(), `UPDATE herald_notifications
			SET created_at = created_at - $1::bigint * interval '1 microsecond',
				idempotent_until = idempotent_until - $1::bigint * interval '1 microsecond'`, d.Microseconds())
		require.NoError(t, err)
	}
	h.register("u", "tok", notification.PlatformAndroid)

	first := h.notify(keyed("u", "daily digest", "digest"))
	advance(59 * time.Minute)
	assert.Equal(t, first.ID(), h.notify(keyed("u", "daily digest", "digest")).ID(), "within the window")
	advance(2 * time.Minute)
	second := h.notify(keyed("u", "daily digest", "digest"))
	assert.NotEqual(t, first.ID(), second.ID(), "after the window the key is free again")
	// A draft may hold its key longer than the configuration says.
	long := keyed("u", "weekly", "weekly")
	long.IdempotencyWindow = 7 * 24 * time.Hour
	w := h.notify(long)
	advance(3 * 24 * time.Hour)
	assert.Equal(t, w.ID(), h.notify(long).ID())
	assert.Equal(t, 3, h.countRows(`SELECT count(*) FROM herald_notifications`))
}

func TestAnIdempotencyKeyIsValidatedAtRaise(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	ctx := context.Background()
	tx, err := h.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // test
	long := keyed("u", "t", strings.Repeat("k", notification.MaxIdempotencyKeyLength+1))
	window := keyed("u", "t", "k")
	window.IdempotencyWindow = 31 * 24 * time.Hour
	_, err = h.herald.Raise(ctx, tx, Notify{Draft: long}, Notify{Draft: window})
	assert.ErrorIs(t, err, notification.ErrTooLong)
	assert.ErrorIs(t, err, notification.ErrInvalidValue)
	var fe *notification.FieldError
	require.True(t, errors.As(err, &fe))
	_, err = tx.Exec(ctx, `SELECT 1`)
	assert.NoError(t, err, "the transaction stays usable")
}
