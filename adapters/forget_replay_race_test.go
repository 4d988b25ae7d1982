package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
)

// pausedReplayStore holds a replay's transaction open right after it took
// its dead letters, until released.
type pausedReplayStore struct {
	app.DeadLetterReplayStore
	taken, release chan struct{}
}

func (s pausedReplayStore) TakeForReplay(ctx context.Context, ids []int64, after int64, limit int, now time.Time) ([]app.DeadLetter, error) {
	dls, err := s.DeadLetterReplayStore.TakeForReplay(ctx, ids, after, limit, now)
	if len(dls) > 0 {
		close(s.taken)
		<-s.release
	}
	return dls, err
}

// waitForLockWaiter waits until some backend of the pool's database waits on
// a lock (forgetting has reached the row a replay holds).
func waitForLockWaiter(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var waiting bool
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting))
		if waiting {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("forgetting never waited for the replay")
}

// An erased user's data never comes back through a dead letter replay: a
// replay whose transaction is under way while the user is forgotten (it took
// a letter naming them and is putting it back on the outbox) must not leave
// an outbox row naming them once both are done.
func TestAnErasedUsersDataNeverComesBackThroughADeadLetterReplayUnderWay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	mine := uuid.New()
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		VALUES ($1, 'erin', 'comment', 'x', now())`, mine)
	require.NoError(t, err)
	payload := `{"v":1,"events":[{"type":"comment_created","data":{"author":"erin"},"notifications":["` + mine.String() + `"]}]}`
	var letter int64
	require.NoError(t, f.pool.QueryRow(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason)
		VALUES ('herald_outbox', 'm1', $1, 'unknown event type') RETURNING id`, []byte(payload)).Scan(&letter))

	taken, release := make(chan struct{}), make(chan struct{})
	replayed := make(chan error, 1)
	go func() {
		_, err := outbox.ReplayDeadLetters(ctx, f.pool, func(tx pgx.Tx) app.DeadLetterReplayStore {
			return pausedReplayStore{adapters.DeadLettersIn(tx), taken, release}
		}, []int64{letter})
		replayed <- err
	}()
	<-taken // the replay holds the letter and is about to republish it
	forgotten := make(chan error, 1)
	go func() {
		_, err := f.repo.ForgetUser(ctx, "erin")
		forgotten <- err
	}()
	waitForLockWaiter(t, f.pool)
	close(release)
	require.NoError(t, <-replayed)
	require.NoError(t, <-forgotten)

	var named int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM watermill_herald_outbox
		WHERE strpos(payload::text, 'erin') > 0 OR strpos(payload::text, $1) > 0`, mine.String()).Scan(&named))
	assert.Zero(t, named, "no outbox row names the erased user")
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_dead_letters
		WHERE position('erin'::bytea IN payload) > 0`).Scan(&named))
	assert.Zero(t, named, "no dead letter names the erased user")
}

// An erased user's data never comes back through a dead letter the relay
// was writing while they were forgotten: the relay's batch (which holds
// the outbox position's row, as watermill-sql does for a whole batch) read
// a message naming them and is setting it aside; once both are done, no
// dead letter (to be replayed later) and no outbox row names them.
func TestAnErasedUsersDataNeverComesBackThroughADeadLetterTheRelayWasWriting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	payload := `{"v":1,"events":[{"type":"unknown_type","data":{"author":"erin"},"notifications":[]}]}`
	var xid string
	var offset int64
	require.NoError(t, f.pool.QueryRow(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		VALUES ('m1', $1, '{}', pg_current_xact_id()) RETURNING transaction_id::text, "offset"`, payload).Scan(&xid, &offset))
	_, err := f.pool.Exec(ctx, `INSERT INTO watermill_offsets_herald_outbox (consumer_group, offset_acked, last_processed_transaction_id)
		VALUES ('herald_relay', 0, '0') ON CONFLICT DO NOTHING`)
	require.NoError(t, err)

	// The relay's batch: position locked, the message read and set aside.
	relay, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer relay.Rollback(ctx) //nolint:errcheck // test
	_, err = relay.Exec(ctx, `SELECT offset_acked, last_processed_transaction_id FROM watermill_offsets_herald_outbox
		WHERE consumer_group = 'herald_relay' FOR UPDATE`)
	require.NoError(t, err)
	_, err = adapters.NewPostgresDeadLetterRepository(relay).Add(ctx, adapters.DeadLetter{
		Topic: "herald_outbox", MessageUUID: "m1", Payload: []byte(payload), Reason: "unknown event type", CreatedAt: time.Now()})
	require.NoError(t, err)

	forgotten := make(chan error, 1)
	go func() {
		_, err := f.repo.ForgetUser(ctx, "erin")
		forgotten <- err
	}()
	select {
	case err := <-forgotten: // done without waiting for the relay
		forgotten <- err
	case <-time.After(500 * time.Millisecond): // waiting for it
	}
	// The relay acks its batch.
	_, err = relay.Exec(ctx, `UPDATE watermill_offsets_herald_outbox SET offset_acked = $1, last_processed_transaction_id = $2::xid8
		WHERE consumer_group = 'herald_relay'`, offset, xid)
	require.NoError(t, err)
	require.NoError(t, relay.Commit(ctx))
	require.NoError(t, <-forgotten)

	var named int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_dead_letters
		WHERE position('erin'::bytea IN payload) > 0`).Scan(&named))
	assert.Zero(t, named, "no dead letter names the erased user")
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM watermill_herald_outbox
		WHERE strpos(payload::text, 'erin') > 0`).Scan(&named))
	assert.Zero(t, named, "no outbox row names the erased user")
}

// A push claimed while the user is being forgotten (after the erasure
// looked for claimed pushes, before it deleted them) may still leave: the
// report must say so, or the operator who waits until InFlightUntil for
// nothing more to reach their devices is told nothing is on its way.
func TestAnErasureReportsEveryPushClaimedWhileItRan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("erin", "erin-phone", notification.PlatformAndroid)
	f.deliver("erin", "", "erin-phone")
	_, err := f.pool.Exec(ctx, `INSERT INTO watermill_offsets_herald_outbox (consumer_group, offset_acked, last_processed_transaction_id)
		VALUES ('herald_relay', 0, '0') ON CONFLICT DO NOTHING`)
	require.NoError(t, err)

	// A relay batch under way holds the erasure after its first steps.
	relay, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer relay.Rollback(ctx) //nolint:errcheck // test
	_, err = relay.Exec(ctx, `SELECT 1 FROM watermill_offsets_herald_outbox WHERE consumer_group = 'herald_relay' FOR UPDATE`)
	require.NoError(t, err)
	type result struct {
		report adapters.ErasureReport
		err    error
	}
	forgotten := make(chan result, 1)
	go func() {
		report, err := f.repo.ForgetUser(ctx, "erin")
		forgotten <- result{report, err}
	}()
	waitForLockWaiter(t, f.pool)
	// A sender claims her push meanwhile.
	claimed, err := f.repo.ClaimDue(ctx, time.Now(), 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.NoError(t, relay.Commit(ctx))
	r := <-forgotten
	require.NoError(t, r.err)
	assert.False(t, r.report.InFlightUntil.IsZero(), "her push, claimed while she was forgotten, may still be on the wire")
}

// The relay's batches run under REPEATABLE READ (watermill-sql): one whose
// snapshot was taken before the erasure committed reads the outbox as it
// was, the user's data included, however long it then waits for the
// position's row. It must not get to set that aside as a dead letter: it
// fails (a serialization failure, which watermill-sql retries at once with
// a fresh snapshot) rather than commit what it read.
func TestAnErasedUsersDataNeverComesBackThroughARelayBatchThatReadTheOutboxBeforeTheErasure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	payload := `{"v":1,"events":[{"type":"unknown_type","data":{"author":"erin"},"notifications":[]}]}`
	var xid string
	var offset int64
	require.NoError(t, f.pool.QueryRow(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		VALUES ('m1', $1, '{}', pg_current_xact_id()) RETURNING transaction_id::text, "offset"`, payload).Scan(&xid, &offset))
	_, err := f.pool.Exec(ctx, `INSERT INTO watermill_offsets_herald_outbox (consumer_group, offset_acked, last_processed_transaction_id)
		VALUES ('herald_relay', 0, '0') ON CONFLICT DO NOTHING`)
	require.NoError(t, err)

	// The relay's next batch has its snapshot (its first statement started,
	// as while it waits for the position's row) before the erasure ends.
	relay, err := f.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	require.NoError(t, err)
	defer relay.Rollback(ctx) //nolint:errcheck // test
	_, err = relay.Exec(ctx, `SELECT 1 FROM watermill_herald_outbox LIMIT 1`)
	require.NoError(t, err)

	_, err = f.repo.ForgetUser(ctx, "erin")
	require.NoError(t, err)

	// The batch goes on: position, messages, the poison set aside, ack.
	batch := func() error {
		if _, err := relay.Exec(ctx, `SELECT offset_acked FROM watermill_offsets_herald_outbox
			WHERE consumer_group = 'herald_relay' FOR UPDATE`); err != nil {
			return err
		}
		var read []byte
		if err := relay.QueryRow(ctx, `SELECT payload FROM watermill_herald_outbox WHERE "offset" = $1`, offset).Scan(&read); err != nil {
			return err
		}
		if _, err := adapters.NewPostgresDeadLetterRepository(relay).Add(ctx, adapters.DeadLetter{
			Topic: "herald_outbox", MessageUUID: "m1", Payload: read, Reason: "unknown event type", CreatedAt: time.Now()}); err != nil {
			return err
		}
		if _, err := relay.Exec(ctx, `UPDATE watermill_offsets_herald_outbox SET offset_acked = $1,
			last_processed_transaction_id = $2::xid8 WHERE consumer_group = 'herald_relay'`, offset, xid); err != nil {
			return err
		}
		return relay.Commit(ctx)
	}
	if err := batch(); err != nil {
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "40001", pgErr.Code, "only a serialization failure, which watermill-sql retries at once")
	}

	var named int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_dead_letters
		WHERE position('erin'::bytea IN payload) > 0`).Scan(&named))
	assert.Zero(t, named, "no dead letter names the erased user")
}
