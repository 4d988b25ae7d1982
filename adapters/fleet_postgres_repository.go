package adapters

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/app"
)

// PostgresFleetRepository keeps what several Herald processes on one
// database share: the registry of running instances (herald_instances), the
// leader's lease (herald_leader) and the project's send budget with its
// pause (herald_send_budget). Every time is the database's: instances whose
// clocks disagree still agree on who is alive, who leads and how many pushes
// the fleet may make. Nothing here holds a session (no advisory lock, no
// LISTEN), so it works behind a transaction-pooling PgBouncer. It implements
// app.InstanceStore and app.BudgetStore.
type PostgresFleetRepository struct {
	db DB
	// walked is when this repository's leader last walked the claimed
	// rows for unregistered holders (Unix nanoseconds, the local clock),
	// and led the instance that led at its last beat: an instance that did
	// not walks at its next beat, so that a new leader walks at its first.
	walked atomic.Int64
	led    atomic.Pointer[uuid.UUID]
	// seen is what this repository's beats read of the other instances'
	// heartbeats, without which none of them is reaped (see sightings).
	seen sightings
}

// orphanWalkEvery is how often the leader walks every claimed row for
// holders that are no longer registered. A dead instance's claims are freed
// by the heartbeat that reaps it; the walk is the backstop for claims whose
// holder left the registry otherwise (a reaper that died mid-way cannot
// leave them: reaping and freeing are one statement). The walk reads the
// partial index of claimed rows, whose dead entries pile up between
// vacuums: during a 1,000,000-token broadcast it took 153 ms on average
// when it ran at every beat, 23 % of Postgres's CPU.
const orphanWalkEvery = 30 * time.Second

// maxWatchedInstances is how many other instances a beat reads into the
// reaper's memory (see registrySQL).
const maxWatchedInstances = 1000

// reapSQL deletes the instances whose heartbeat is older than the
// DeadAfter each registered ($1 microseconds for one registered without)
// and frees their claims in the same statement: they are due at once, so
// any live sender claims them afresh (under a new claim id, which the dead
// instance's outcomes can no longer match). It returns how many instances
// it deleted and claims it freed, and signals $2 if it freed any.
//
// Only the instances in $3 are candidates, and only while their
// heartbeat_at is still the one in $4: those whose heartbeat the reaper
// has itself seen stand still for their DeadAfter (see sightings). The
// database's clock alone took every live instance for dead once it
// stepped forward by more than DeadAfter.
//
// Every instance runs it at every beat, and nearly always nobody is dead:
// the claims are joined to the reaped rows, so that an empty reaped set
// reads no delivery at all. Filtering with claimed_by = ANY (ARRAY(SELECT
// id FROM reaped)) instead let the planner, which cannot see the array,
// walk the open deliveries' due_at index past every leased and scheduled
// row, and its heap row, at every beat whenever claimed rows were most of
// the open ones (measured with a fleet of three holding 30,000 leases and
// nobody dead: 4,426 pages and 7-10 ms a beat, for each instance).
//
// A registered DeadAfter is read as at most maxDeadAfterSQL, the longest a
// Herald can register (a time.Duration): a longer one, written around
// Herald, made the interval overflow and failed every instance's beat, so
// that all of them fenced themselves and nothing was pushed anywhere.
const reapSQL = `
	WITH reaped AS (
		DELETE FROM herald_instances i
		USING unnest($3::uuid[], $4::timestamptz[]) AS seen (id, heartbeat_at)
		WHERE i.id = seen.id AND i.heartbeat_at = seen.heartbeat_at
			AND i.heartbeat_at < now() - least(coalesce(i.dead_after_us, $1::bigint), ` + maxDeadAfterSQL + `) * interval '1 microsecond'
		RETURNING i.id
	), freed AS (
		UPDATE herald_deliveries d SET due_at = now(), updated_at = now(), claimed_by = NULL
		FROM reaped r
		WHERE d.claimed_by = r.id AND d.status = 'claimed' AND d.due_at > now()
		RETURNING 1
	), counts AS (
		SELECT (SELECT count(*) FROM reaped) AS reaped, (SELECT count(*) FROM freed) AS freed
	)
	SELECT reaped, freed, CASE WHEN freed > 0 THEN pg_notify($2, '') END FROM counts`

// maxDeadAfterSQL is the longest DeadAfter a Herald registers, in
// microseconds: math.MaxInt64 nanoseconds, the longest time.Duration.
const maxDeadAfterSQL = `9223372036854775::bigint`

// registrySQL reads the other instances' heartbeats (self is $2) and
// DeadAfters ($1 microseconds for one registered without), after the reap,
// for the reaper's memory (see sightings). A DeadAfter is read as the reap
// reads it, and one below zero as zero.
//
// It reads at most $3 (maxWatchedInstances) of them, those the database's
// clock takes for dead soonest: a registry flooded with rows no Herald
// wrote that never die (a heartbeat at infinity, a DeadAfter of centuries)
// was read whole and, once they stood still, sent back whole at every
// beat, which took 4.4 s with 1,000,000 rows, near DeadAfter, past which
// every live instance fences itself. A dead instance comes before the live
// ones, whose heartbeats are newer, and before such rows. The order is
// taken in numeric epoch microseconds, which no heartbeat or DeadAfter
// overflows (a timestamp plus an interval can).
const registrySQL = `
	SELECT id, heartbeat_at, dead_after FROM (
		SELECT id, heartbeat_at, greatest(0, least(coalesce(dead_after_us, $1::bigint), ` + maxDeadAfterSQL + `)) AS dead_after
		FROM herald_instances WHERE id <> $2
	) i
	ORDER BY extract(epoch FROM heartbeat_at)::numeric * 1000000 + dead_after
	LIMIT $3`

// NewPostgresFleetRepository returns a repository on db.
func NewPostgresFleetRepository(db DB) *PostgresFleetRepository {
	return &PostgresFleetRepository{db: requireDB(db)}
}

// Beat implements app.InstanceStore: in one round trip (one transaction),
// it registers self (with deadAfter, by which the others judge it) or
// refreshes its heartbeat, deletes the instances whose heartbeat is older
// than their own registered DeadAfter (deadAfter for one registered by an
// older Herald, without one) and that this repository's beats have seen
// stand still for as long (see sightings), and frees their claims, takes
// or renews the leader's lease for leaseFor if it is free, expired or
// already self's, and, when self leads (at its first beat as the leader,
// then every orphanWalkEvery), lists the instances that still hold claims
// but are no longer registered (dead).
func (r *PostgresFleetRepository) Beat(ctx context.Context, self app.InstanceInfo, leaseFor, deadAfter time.Duration) (app.BeatResult, error) {
	var res app.BeatResult
	stalledIDs, stalledBeats := r.seen.stalled(self.ID, time.Now())
	batch := &pgx.Batch{}
	batch.Queue(`
		INSERT INTO herald_instances (id, host, pid, version, started_at, heartbeat_at, dead_after_us)
		VALUES ($1, $2, $3, $4, now(), now(), $5)
		ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), dead_after_us = excluded.dead_after_us
		RETURNING xmax = 0`, [16]byte(self.ID), self.Host, self.PID, self.Version, deadAfter.Microseconds()).QueryRow(func(row pgx.Row) error {
		return row.Scan(&res.Registered)
	})
	batch.Queue(reapSQL, deadAfter.Microseconds(), deliveriesChannel, stalledIDs, stalledBeats).QueryRow(func(row pgx.Row) error {
		var notified any
		return row.Scan(&res.Reaped, &res.Freed, &notified)
	})
	// The lease is free once it has expired, and when it ends further
	// ahead than its holder could have taken it (its registered DeadAfter,
	// or at least leaseFor): such a lease was written around Herald (an
	// 'infinity', a holder that never existed, a restore) or under a clock
	// that has since gone back, and held every instance off for good, so
	// that nobody swept or walked for orphaned claims. A missing row is
	// written afresh.
	batch.Queue(`
		INSERT INTO herald_leader AS l (singleton, holder, expires_at)
		VALUES (true, $1, now() + $2::bigint * interval '1 microsecond')
		ON CONFLICT (singleton) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE l.holder = $1 OR l.expires_at < now() OR l.expires_at > now() + greatest($2::bigint, coalesce(
			(SELECT least(i.dead_after_us, `+maxDeadAfterSQL+`) FROM herald_instances i WHERE i.id = l.holder), 0))
			* interval '1 microsecond'
		RETURNING true`, [16]byte(self.ID), leaseFor.Microseconds()).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			res.Leader = true
		}
		return rows.Err()
	})
	// Only the leader looks for unregistered holders' claims, at its first
	// beat as the leader and then every orphanWalkEvery: a walk of the
	// partial index of claimed rows, anti-joined with the small registry.
	// A follower's beat queues it too (it cannot know it leads before the
	// batch's answer), where it costs nothing: the walk is guarded by a
	// one-time test of the lease. Only a walk by the leader counts, or a
	// follower that walked for nothing would make its first beat as the
	// leader skip the walk.
	now := time.Now().UnixNano()
	wasLeader := r.led.Load() != nil && *r.led.Load() == self.ID
	walk := !wasLeader || now-r.walked.Load() >= int64(orphanWalkEvery)
	if walk {
		batch.Queue(`
			SELECT DISTINCT d.claimed_by FROM herald_deliveries d
			WHERE d.status = 'claimed' AND d.claimed_by IS NOT NULL
				AND EXISTS (SELECT 1 FROM herald_leader WHERE holder = $1 AND expires_at > now())
				AND NOT EXISTS (SELECT 1 FROM herald_instances i WHERE i.id = d.claimed_by)`,
			[16]byte(self.ID)).Query(func(rows pgx.Rows) error {
			ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
			res.Dead = ids
			return err
		})
	}
	var registry []registration
	batch.Queue(registrySQL, deadAfter.Microseconds(), [16]byte(self.ID), maxWatchedInstances).Query(func(rows pgx.Rows) error {
		var err error
		registry, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (registration, error) {
			var reg registration
			var us int64
			err := row.Scan(&reg.id, &reg.heartbeat, &us)
			reg.deadAfter = time.Duration(us) * time.Microsecond
			return reg, err
		})
		return err
	})
	if err := r.db.SendBatch(ctx, batch).Close(); err != nil {
		return app.BeatResult{}, fmt.Errorf("instance heartbeat: %w", err)
	}
	r.seen.saw(registry, time.Now())
	r.noteLeader(self.ID, res.Leader, walk, now)
	return res, nil
}

// noteLeader records whether self led at the beat just made (at now), and
// when the leader last walked.
func (r *PostgresFleetRepository) noteLeader(self uuid.UUID, leader, walked bool, now int64) {
	switch {
	case leader:
		if walked {
			r.walked.Store(now)
		}
		r.led.Store(&self)
	case r.led.Load() != nil && *r.led.Load() == self:
		r.led.Store(nil)
	}
}

// FreeClaimsOf implements app.InstanceStore: the claims still held by the
// dead instances become due now, so any live sender claims them afresh
// (under a new claim id, which the dead instance's outcomes can no longer
// match). Claims of live instances are never touched: an instance found
// dead by a heartbeat may beat again (registering under the same id, after
// a long pause) and claim before this runs, so the registry is read again
// here and a registered instance's claims are left alone. A freed claim
// forgets its holder: a Herald older than migration 0007 that claims it
// afresh during a rolling upgrade does not write claimed_by, and its live
// claim must not look like the dead instance's at the next heartbeat.
func (r *PostgresFleetRepository) FreeClaimsOf(ctx context.Context, dead []uuid.UUID) (int, error) {
	if len(dead) == 0 {
		return 0, nil
	}
	tag, err := r.db.Exec(ctx, `
		UPDATE herald_deliveries d SET due_at = now(), updated_at = now(), claimed_by = NULL
		WHERE d.status = 'claimed' AND d.claimed_by = ANY($1::uuid[]) AND d.due_at > now()
			AND NOT EXISTS (SELECT 1 FROM herald_instances i WHERE i.id = d.claimed_by)`, uuidArray(dead))
	if err != nil {
		return 0, fmt.Errorf("free dead instances' claims: %w", err)
	}
	if tag.RowsAffected() > 0 {
		_, _ = r.db.Exec(ctx, `SELECT pg_notify($1, '')`, deliveriesChannel)
	}
	return int(tag.RowsAffected()), nil
}

// Leave implements app.InstanceStore: it deletes id's registration and
// gives up its leader's lease, if it holds it, so another instance leads at
// its next heartbeat.
func (r *PostgresFleetRepository) Leave(ctx context.Context, id uuid.UUID) error {
	batch := &pgx.Batch{}
	batch.Queue(`DELETE FROM herald_instances WHERE id = $1`, [16]byte(id))
	batch.Queue(`UPDATE herald_leader SET holder = NULL, expires_at = 'epoch' WHERE holder = $1`, [16]byte(id))
	if err := r.db.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("leave the fleet: %w", err)
	}
	r.led.Store(nil) // if it joins again and leads, it walks at its first beat
	return nil
}

// Instances returns the registered instances whose heartbeat is at most
// their own registered DeadAfter old (deadAfter for one registered without
// one), the oldest first, and marks the one holding an unexpired leader's
// lease.
func (r *PostgresFleetRepository) Instances(ctx context.Context, deadAfter time.Duration) ([]app.InstanceInfo, error) {
	rows, err := r.db.Query(ctx, `
		SELECT i.id, i.host, i.pid, i.version,
			-- A time no Herald writes ('infinity') is shown at the end of
			-- the calendar rather than failing the list.
			least(greatest(i.started_at, '0001-01-01Z'), '9999-12-31Z'),
			least(greatest(i.heartbeat_at, '0001-01-01Z'), '9999-12-31Z'),
			coalesce(l.holder = i.id AND l.expires_at > now(), false)
		FROM herald_instances i LEFT JOIN herald_leader l ON true
		WHERE i.heartbeat_at >= now() - least(coalesce(i.dead_after_us, $1::bigint), `+maxDeadAfterSQL+`) * interval '1 microsecond'
		ORDER BY i.started_at, i.id`, deadAfter.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (app.InstanceInfo, error) {
		var in app.InstanceInfo
		err := row.Scan(&in.ID, &in.Host, &in.PID, &in.Version, &in.StartedAt, &in.HeartbeatAt, &in.Leader)
		return in, err
	})
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	return list, nil
}

// maxFleetPause is the longest pause the fleet's budget holds: the longest
// Retry-After Herald honours (24 hours). PauseAll sets at most this; a
// paused_until further ahead was not set by Herald (a script, a restore, a
// database clock that has since gone back) and is no pause at all.
const maxFleetPause = maxRetryAfter

// Grant implements app.BudgetStore: the budget row is a token bucket of at
// most capacity tokens refilled at perSecond by the database's clock; it
// gives min(want, whole tokens available) and reports how long the fleet's
// pause still lasts. One statement; concurrent grants queue on the row's
// lock, so no token is ever given twice.
//
// The row is read as a grant would have written it, whatever it holds:
// tokens below zero (minus infinity, a debt of millions) count as none and
// NaN or infinity as a full bucket, a refill time in the future (infinity,
// a clock that has gone back) as now, one before the last hour as an
// hour ago (the bucket is full by then at any rate), and a pause further
// ahead than maxFleetPause as none; a missing row is written afresh. Before,
// each of these failed every grant or granted nothing, or less than
// nothing, for as long as the row said: no instance pushed.
func (r *PostgresFleetRepository) Grant(ctx context.Context, want int, perSecond, capacity float64) (int, time.Duration, error) {
	var granted int
	var pauseUS int64
	// Every expression reads the row's own columns, which an UPDATE reads
	// from the latest version once it holds the row's lock: a concurrent
	// grant is always seen. (A joined subquery would be read from the
	// statement's snapshot, and could give the same tokens twice.) ON
	// CONFLICT DO UPDATE reads and locks the row alike.
	const available = `least($3::float8, greatest(0, b.tokens) + $2::float8 *
		extract(epoch FROM now() - least(now(), greatest(b.refilled_at, now() - interval '1 hour')))::float8)`
	err := r.db.QueryRow(ctx, `
		INSERT INTO herald_send_budget AS b (singleton, tokens, refilled_at, last_grant, paused_until)
		VALUES (true, 0, now(), 0, 'epoch')
		ON CONFLICT (singleton) DO UPDATE SET
			tokens = `+available+` - least($1, floor(`+available+`)),
			last_grant = least($1, floor(`+available+`))::int,
			refilled_at = CASE WHEN b.refilled_at > now() + interval '1 second' THEN now()
				ELSE greatest(b.refilled_at, now()) END,
			paused_until = CASE WHEN b.paused_until > now() + $4::bigint * interval '1 microsecond'
				OR b.paused_until < 'epoch' THEN 'epoch' ELSE b.paused_until END
		RETURNING last_grant, greatest(0, (extract(epoch FROM paused_until - now()) * 1e6)::bigint)`,
		want, perSecond, capacity, maxFleetPause.Microseconds()).Scan(&granted, &pauseUS)
	if err != nil {
		return 0, 0, fmt.Errorf("grant send budget: %w", err)
	}
	return granted, time.Duration(pauseUS) * time.Microsecond, nil
}

// PauseAll implements app.BudgetStore: no instance pushes for d (at most
// maxFleetPause) from now (the database's clock), or until a later pause
// already set ends. A pause Herald did not set (see Grant) is replaced.
func (r *PostgresFleetRepository) PauseAll(ctx context.Context, d time.Duration) error {
	_, err := r.db.Exec(ctx, `
		INSERT INTO herald_send_budget AS b (singleton, tokens, refilled_at, last_grant, paused_until)
		VALUES (true, 0, now(), 0, now() + least($1::bigint, $2::bigint) * interval '1 microsecond')
		ON CONFLICT (singleton) DO UPDATE SET paused_until = CASE
			WHEN b.paused_until > now() + $2::bigint * interval '1 microsecond' OR b.paused_until < 'epoch'
				THEN excluded.paused_until
			ELSE greatest(b.paused_until, excluded.paused_until) END`, d.Microseconds(), maxFleetPause.Microseconds())
	if err != nil {
		return fmt.Errorf("pause the fleet's sending: %w", err)
	}
	return nil
}
