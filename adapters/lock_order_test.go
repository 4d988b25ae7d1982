package adapters_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// lockOrderRounds is how many times each pair of statements is raced.
const lockOrderRounds = 40

// Herald's own statements never deadlock each other. Postgres breaks a
// deadlock by aborting one side after deadlock_timeout (1 s by default):
// both wait that long, and the loser's work fails (a host's import or
// unregistration returns an error, a sender's record of outcomes is
// retried). Each case races two statements that touch the same rows, with
// inputs in opposite orders, lockOrderRounds times, on a database whose
// deadlock_timeout is 10 ms (so a deadlock is found fast), and requires
// that neither side ever failed. Each side runs in a transaction of its
// own, where the repositories do not retry a lost deadlock: every deadlock
// is seen.
func TestHeraldsOwnStatementsNeverDeadlockEachOther(t *testing.T) {
	t.Parallel()
	// An import, or a sender's batch, of tokensPerRound tokens; one
	// registration, unregistration or record per token for singles.
	const tokensPerRound, singles = 200, 8
	// roundTokens are the round's tokens, in order.
	roundTokens := func(round int) []string {
		ts := make([]string, tokensPerRound)
		for i := range ts {
			ts[i] = fmt.Sprintf("r%03d-token-%03d", round, i)
		}
		return ts
	}
	reversed := func(ts []string) []string {
		out := slices.Clone(ts)
		slices.Reverse(out)
		return out
	}
	for _, tc := range []struct {
		name string
		// race prepares a round and returns its two sides.
		race func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error)
	}{
		{"two imports of the same tokens in opposite orders", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts := roundTokens(round)
			return f.importer(ts, "alice"), f.importer(reversed(ts), "bob")
		}},
		{"two imports moving tokens that have pushes waiting, in opposite orders", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts := roundTokens(round)
			f.registerAll(t, ts, "carol")
			f.deliverAll(t, "carol", ts, false)
			return f.importer(ts, "alice"), f.importer(reversed(ts), "bob")
		}},
		{"an import and the record of pushes that found its tokens dead", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts := roundTokens(round)
			f.registerAll(t, ts, "alice")
			f.deliverAll(t, "alice", ts, false) // siblings, waiting
			ds := f.claimDead(t, "alice", ts)
			return f.recorder(ds), f.importer(reversed(ts), "alice")
		}},
		{"an import moving tokens and the record of pushes that found them dead", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts := roundTokens(round)
			f.registerAll(t, ts, "alice")
			f.deliverAll(t, "alice", ts, false)
			ds := f.claimDead(t, "alice", ts)
			return f.recorder(ds), f.importer(reversed(ts), "bob")
		}},
		{"an import moving tokens and the record of pushes sent to them", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts := roundTokens(round)
			f.registerAll(t, ts, "alice")
			ds := f.claimed(t, "alice", ts, func(d *notification.Delivery, now time.Time) error {
				return d.MarkSent("projects/p/messages/1", now)
			})
			slices.Reverse(ds)
			return f.recorder(ds), f.importer(ts, "bob")
		}},
		{"unregistering tokens and the record of their pushes that found them dead", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts := roundTokens(round)[:singles]
			f.registerAll(t, ts, "alice")
			f.deliverAll(t, "alice", ts, false)
			ds := f.claimDead(t, "alice", ts)
			var records, unregistrations []func(context.Context) error
			for i, d := range ds {
				records = append(records, f.recorder([]*notification.Delivery{d}))
				unregistrations = append(unregistrations, f.unregisterer(ts[i]))
			}
			return all(records), all(unregistrations)
		}},
		{"unregistering tokens and registering them to someone else", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts := roundTokens(round)[:singles]
			f.registerAll(t, ts, "alice")
			f.deliverAll(t, "alice", ts, false)
			var registrations, unregistrations []func(context.Context) error
			for _, tok := range ts {
				registrations = append(registrations, f.importer([]string{tok}, "bob"))
				unregistrations = append(unregistrations, f.unregisterer(tok))
			}
			return all(unregistrations), all(registrations)
		}},
		{"forgetting a user and the record of pushes that found their tokens dead", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts, user := roundTokens(round), fmt.Sprintf("user-%d", round)
			f.registerAll(t, ts, user)
			f.deliverAll(t, user, ts, false)
			ds := f.claimDead(t, user, ts)
			return f.recorder(ds), f.forgetter(user)
		}},
		{"forgetting a user and the record of pushes sent to them", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts, user := roundTokens(round), fmt.Sprintf("user-%d", round)
			f.registerAll(t, ts, user)
			ds := f.claimed(t, user, ts, func(d *notification.Delivery, now time.Time) error {
				return d.MarkSent("projects/p/messages/1", now)
			})
			slices.Reverse(ds)
			return f.recorder(ds), f.forgetter(user)
		}},
		{"housekeeping's deletion of stale tokens and an import of them", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts := roundTokens(round)
			f.registerAll(t, ts, "alice")
			_, err := f.pool.Exec(context.Background(), `UPDATE herald_device_tokens SET last_seen_at = now() - interval '1 year'`)
			require.NoError(t, err)
			house := adapters.NewPostgresHousekeepingRepository(f.pool)
			return func(ctx context.Context) error {
				_, err := house.DeleteTokensUnseenFor(ctx, 30*24*time.Hour, 1000) // on the pool: it never retries
				return err
			}, f.importer(reversed(ts), "alice")
		}},
		{"housekeeping's deletion of old sent deliveries and forgetting their user", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ts, user := roundTokens(round), fmt.Sprintf("user-%d", round)
			f.registerAll(t, ts, user)
			for range 5 { // a sweep long enough for the erasure to reach them
				f.finishedLongAgo(t, user, "sent", ts)
			}
			house := adapters.NewPostgresHousekeepingRepository(f.pool)
			return func(ctx context.Context) error {
				_, err := house.DeleteFinishedDeliveries(ctx, 30*24*time.Hour, -1, 5000) // on the pool: it never retries
				return err
			}, f.forgetter(user)
		}},
		{"housekeeping's deletion of old failed deliveries and an operator's retry of them", func(t *testing.T, f *lockOrderFixture, round int) (a, b func(context.Context) error) {
			ids := f.finishedLongAgo(t, "alice", "failed", roundTokens(round))
			house := adapters.NewPostgresHousekeepingRepository(f.pool)
			return func(ctx context.Context) error {
					_, err := house.DeleteFinishedDeliveries(ctx, -1, 30*24*time.Hour, 1000) // on the pool: it never retries
					return err
				}, func(ctx context.Context) error {
					return f.inTx(ctx, func(db adapters.DB) error {
						_, err := adapters.NewPostgresDeliveryRepository(db).RetryFailed(ctx, ids, 0)
						return err
					})
				}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newLockOrderFixture(t, "10ms")
			var deadlocks int
			var failures []error
			for round := range lockOrderRounds {
				a, b := tc.race(t, f, round)
				for _, err := range raceBoth(a, b) {
					var pgErr *pgconn.PgError
					switch {
					case errors.As(err, &pgErr) && pgErr.Code == "40P01":
						deadlocks++
					case err != nil:
						failures = append(failures, err)
					}
				}
			}
			require.Empty(t, failures)
			assert.Zero(t, deadlocks, "deadlocks in %d rounds", lockOrderRounds)
		})
	}
}

// all runs each of sides at once and returns the first error.
func all(sides []func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		errs := make([]error, len(sides))
		var wg sync.WaitGroup
		for i, side := range sides {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = side(ctx)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// A host's registration never fails because a transaction Herald does not
// order (the relay's, which expands notifications in watermill's
// transaction, or one of the host's) deadlocked with it: Postgres aborts
// one side, and when that side is the registration, it is run again.
func TestARegistrationNeverFailsBecauseItLostADeadlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// The registration's connection finds the deadlock (its wait began
	// first and its timeout is the shorter): it is the side aborted.
	f := newLockOrderFixture(t, "300ms")
	ts := []string{"phone-1", "phone-2"}
	f.registerAll(t, ts, "alice")
	f.deliverAll(t, "alice", ts, false)
	rows, err := f.pool.Query(ctx, `SELECT id FROM herald_deliveries ORDER BY id`)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	require.Len(t, ids, 2)

	// The other transaction holds the second delivery...
	other, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer other.Rollback(ctx) //nolint:errcheck // test
	_, err = other.Exec(ctx, `SET LOCAL deadlock_timeout = '10s'`)
	require.NoError(t, err)
	_, err = other.Exec(ctx, `UPDATE herald_deliveries SET updated_at = now() WHERE id = $1`, ids[1])
	require.NoError(t, err)
	// ...while the phones move to bob: the move takes the first and waits.
	var regs []*notification.DeviceToken
	for _, tok := range ts {
		d, err := notification.NewDeviceToken("bob", tok, notification.PlatformAndroid, time.Now())
		require.NoError(t, err)
		regs = append(regs, d)
	}
	moved := make(chan error, 1)
	go func() { moved <- adapters.NewPostgresDeviceTokenRepository(f.pool).UpsertMany(ctx, regs) }()
	waitForLockWaiter(t, f.pool)
	// The other transaction then wants the first: a deadlock, which the
	// registration loses.
	_, err = other.Exec(ctx, `UPDATE herald_deliveries SET updated_at = now() WHERE id = $1`, ids[0])
	require.NoError(t, err)
	require.NoError(t, other.Commit(ctx))

	require.NoError(t, <-moved, "the registration failed")
	var closed int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE status = 'token_moved'`).Scan(&closed))
	assert.Equal(t, 2, closed)
}

// raceBoth starts a and b at the same moment and returns their errors.
func raceBoth(a, b func(context.Context) error) []error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := make(chan struct{})
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, side := range []func(context.Context) error{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = side(ctx)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

type lockOrderFixture struct {
	pool *pgxpool.Pool
	repo *adapters.PostgresDeliveryRepository
}

// newLockOrderFixture connects to a fresh database with deadlockTimeout
// (10ms: a deadlock is broken, and counted, at once).
func newLockOrderFixture(t *testing.T, deadlockTimeout string) *lockOrderFixture {
	cfg, err := pgxpool.ParseConfig(testutil.NewDatabase(t))
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["deadlock_timeout"] = deadlockTimeout
	cfg.MaxConns = 20 // a connection for every racing statement
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	var timeout string
	require.NoError(t, pool.QueryRow(context.Background(), `SHOW deadlock_timeout`).Scan(&timeout))
	require.Equal(t, deadlockTimeout, timeout)
	return &lockOrderFixture{pool: pool, repo: adapters.NewPostgresDeliveryRepository(pool)}
}

// inTx runs do on a transaction of its own. The repositories retry a
// statement that lost a deadlock, except in a caller's transaction: there
// the deadlock is returned, and counted.
func (f *lockOrderFixture) inTx(ctx context.Context, do func(db adapters.DB) error) error {
	return pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error { return do(tx) })
}

// importer registers tokens to user, in that order, in one call.
func (f *lockOrderFixture) importer(tokens []string, user string) func(context.Context) error {
	return func(ctx context.Context) error {
		ds := make([]*notification.DeviceToken, len(tokens))
		for i, tok := range tokens {
			d, err := notification.NewDeviceToken(user, tok, notification.PlatformAndroid, time.Now())
			if err != nil {
				return err
			}
			ds[i] = d
		}
		return f.inTx(ctx, func(db adapters.DB) error {
			return adapters.NewPostgresDeviceTokenRepository(db).UpsertMany(ctx, ds)
		})
	}
}

func (f *lockOrderFixture) unregisterer(token string) func(context.Context) error {
	return func(ctx context.Context) error {
		return f.inTx(ctx, func(db adapters.DB) error {
			_, err := adapters.NewPostgresDeviceTokenRepository(db).Delete(ctx, token)
			return err
		})
	}
}

func (f *lockOrderFixture) recorder(ds []*notification.Delivery) func(context.Context) error {
	return func(ctx context.Context) error {
		return f.inTx(ctx, func(db adapters.DB) error {
			_, err := adapters.NewPostgresDeliveryRepository(db).Record(ctx, ds)
			return err
		})
	}
}

func (f *lockOrderFixture) forgetter(user string) func(context.Context) error {
	return func(ctx context.Context) error {
		return f.inTx(ctx, func(db adapters.DB) error {
			_, err := adapters.NewPostgresDeliveryRepository(db).ForgetUser(ctx, user)
			return err
		})
	}
}

func (f *lockOrderFixture) registerAll(t *testing.T, tokens []string, user string) {
	t.Helper()
	require.NoError(t, f.importer(tokens, user)(context.Background()))
}

// deliverAll adds a notification to recipient with a pending delivery to
// each token, due now if due, else in an hour.
func (f *lockOrderFixture) deliverAll(t *testing.T, recipient string, tokens []string, due bool) {
	t.Helper()
	ctx := context.Background()
	id := uuid.New()
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		VALUES ($1, $2, 'test', 'hello', now())`, id, recipient)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT $1, t, 'pending', CASE WHEN $3 THEN now() ELSE now() + interval '1 hour' END, now(), now()
		FROM unnest($2::text[]) t`, id, tokens, due)
	require.NoError(t, err)
}

// finishedLongAgo adds a notification to recipient with a delivery to each
// token that ended in status two months ago, the later deliveries (by id)
// ending earlier (as a push retried for hours fails after pushes made after
// it), and returns their ids in id order.
func (f *lockOrderFixture) finishedLongAgo(t *testing.T, recipient, status string, tokens []string) []int64 {
	t.Helper()
	ctx := context.Background()
	id := uuid.New()
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		VALUES ($1, $2, 'test', 'hello', now())`, id, recipient)
	require.NoError(t, err)
	rows, err := f.pool.Query(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT $1, t, $3, now(), now(), now() - interval '60 days' - i * interval '1 minute'
		FROM unnest($2::text[]) WITH ORDINALITY AS u(t, i)
		RETURNING id`, id, tokens, status)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	slices.Sort(ids)
	return ids
}

// claimDead delivers a push to recipient on each token, claims them all,
// and returns them as FCM's UNREGISTERED answers leave them.
func (f *lockOrderFixture) claimDead(t *testing.T, recipient string, tokens []string) []*notification.Delivery {
	t.Helper()
	return f.claimed(t, recipient, tokens, func(d *notification.Delivery, now time.Time) error {
		_, err := d.RecordFailure(&notification.SendError{Class: notification.ErrTokenUnregistered,
			Code: "UNREGISTERED", Reason: "gone"}, notification.RetryPolicy{MaxAttempts: 3}, now, 0)
		return err
	})
}

// claimed delivers a push to recipient on each token, claims them all,
// and returns them with outcome applied.
func (f *lockOrderFixture) claimed(t *testing.T, recipient string, tokens []string,
	outcome func(*notification.Delivery, time.Time) error) []*notification.Delivery {
	t.Helper()
	f.deliverAll(t, recipient, tokens, true)
	now := time.Now()
	claimed, err := f.repo.ClaimDue(context.Background(), now, len(tokens)+1, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, len(tokens))
	ds := make([]*notification.Delivery, len(claimed))
	for i, c := range claimed {
		require.NoError(t, outcome(c.Delivery, now))
		ds[i] = c.Delivery
	}
	return ds
}
