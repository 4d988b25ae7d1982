package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/internal/backoff"
	"github.com/herald-push/herald/internal/settings"
)

// Several Herald processes (a fleet) on one database: each registers itself
// and keeps a heartbeat; one of them leads (a lease on the database's
// clock); the leader frees the claims of instances that stopped beating.

// InstanceInfo is one running Herald as the registry holds it.
type InstanceInfo struct {
	ID      uuid.UUID
	Host    string
	PID     int
	Version string
	// StartedAt and HeartbeatAt are the database's clock.
	StartedAt, HeartbeatAt time.Time
	// Leader is true for the instance holding the leader's lease.
	Leader bool
}

// BeatResult is what one heartbeat learned.
type BeatResult struct {
	// Registered is true when the heartbeat found no row of this instance
	// and registered it: at the first beat, or after the fleet took it for
	// dead.
	Registered bool
	// Reaped counts the registrations this beat deleted because their
	// heartbeat was older than DeadAfter (and stood still that long as this
	// instance saw it); Freed counts the claims they held, which the same
	// beat made due at once.
	Reaped, Freed int
	// Leader is true when this instance holds the leader's lease.
	Leader bool
	// Dead lists, for the leader only and from time to time, instances no
	// longer registered that still hold claims (those reaped by a beat have
	// none left: see Freed).
	Dead []uuid.UUID
}

// InstanceStore is the membership's view of the registry.
type InstanceStore interface {
	// Beat registers self or refreshes its heartbeat, deletes the
	// registrations older than deadAfter (their own, if they registered
	// one) whose heartbeat this store's earlier beats have also seen stand
	// still for as long, by the local monotonic clock, so that a forward
	// step of the database's clock takes no live instance for dead, and
	// frees their claims, takes or renews the leader's lease for leaseFor
	// if it is free, expired or self's, and when self leads lists, from
	// time to time, the unregistered instances that still hold claims. One
	// round trip; times are the store's (the database's) clock.
	Beat(ctx context.Context, self InstanceInfo, leaseFor, deadAfter time.Duration) (BeatResult, error)
	// FreeClaimsOf makes the claims of the dead instances due at once and
	// returns how many it freed. Claims of other instances, and of one
	// registered again since it was found dead, are untouched.
	FreeClaimsOf(ctx context.Context, dead []uuid.UUID) (int, error)
	// Leave deletes the instance's registration and gives up its lease.
	Leave(ctx context.Context, id uuid.UUID) error
}

// MembershipConfig configures a Membership. Zero values mean defaults;
// each setting is documented, with its default, on herald.FleetConfig.
type MembershipConfig struct {
	HeartbeatInterval, DeadAfter time.Duration
	// Logger receives membership changes. Defaults to discarding.
	Logger *slog.Logger
	// Now is the clock that times heartbeats locally. Defaults to time.Now.
	Now func() time.Time
}

func (c *MembershipConfig) setDefaults() {
	settings.Default(&c.HeartbeatInterval, time.Second)
	settings.Default(&c.DeadAfter, 5*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Now = clockOrDefault(c.Now)
}

// WithDefaults returns c with every zero field set to its default.
func (c MembershipConfig) WithDefaults() MembershipConfig {
	c.setDefaults()
	return c
}

// Validate reports every invalid field at once, in field order, then the
// relation between them: DeadAfter must be at least three heartbeats, so
// that one slow heartbeat never makes a live instance look dead.
func (c MembershipConfig) Validate() error {
	errs := []error{
		settings.NotNegative("HeartbeatInterval", c.HeartbeatInterval),
		settings.NotNegative("DeadAfter", c.DeadAfter),
	}
	if c.HeartbeatInterval >= 0 && c.DeadAfter >= 0 {
		d := c.WithDefaults()
		if d.DeadAfter < 3*d.HeartbeatInterval {
			errs = append(errs, fmt.Errorf("DeadAfter (%s) must be at least three times HeartbeatInterval (%s)",
				d.DeadAfter, d.HeartbeatInterval))
		}
	}
	return errors.Join(errs...)
}

// Membership is one instance's place in the fleet: its registration and
// heartbeat, its leadership, and the freeing of dead instances' claims
// when it leads. Leader and Live are safe for concurrent use.
//
// An instance is dead to the others once its heartbeat is older than
// DeadAfter on the database's clock and a beating instance has itself
// seen it stand still for DeadAfter (one reading of the database's clock,
// which may have stepped forward, is not enough); that instance's beat
// then deletes it and frees its claims at once (their leases are not
// waited out). So that a live
// instance cut off from the database does not push what the others take
// over, Live turns false once its last successful heartbeat started
// DeadAfter minus one HeartbeatInterval ago: a sender then starts no push.
type Membership struct {
	store InstanceStore
	self  InstanceInfo
	cfg   MembershipConfig
	log   *slog.Logger

	mu          sync.Mutex
	joined      bool
	lastBeat    time.Time // start of the last successful beat
	leaderUntil time.Time
	failing     bool
}

// NewMembership returns the membership of self (its ID, Host, PID and
// Version) in the fleet. store must not be nil.
func NewMembership(store InstanceStore, self InstanceInfo, cfg MembershipConfig) (*Membership, error) {
	if store == nil {
		panic("app: NewMembership: nil store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid fleet config: %w", err)
	}
	cfg.setDefaults()
	log := cfg.Logger.With("component", "herald_fleet", "instance_id", self.ID.String())
	return &Membership{store: store, self: self, cfg: cfg, log: log}, nil
}

// ID is this instance's id.
func (m *Membership) ID() uuid.UUID { return m.self.ID }

// DeadAfter is how old a heartbeat makes an instance dead.
func (m *Membership) DeadAfter() time.Duration { return m.cfg.DeadAfter }

// Join registers the instance, retrying with backoff until it succeeds,
// and returns nil; or ctx's error if ctx ended first.
func (m *Membership) Join(ctx context.Context) error {
	retry := backoff.New(100*time.Millisecond, 2*time.Second)
	for {
		if err := m.Beat(ctx); err == nil {
			return nil
		}
		if !backoff.Sleep(ctx, retry.Next()) {
			return ctx.Err()
		}
	}
}

// Run beats every HeartbeatInterval until ctx ends, then returns nil. It
// does not leave the fleet: call Leave once nothing of this instance holds
// claims any more.
func (m *Membership) Run(ctx context.Context) error {
	ticker := time.NewTicker(m.cfg.HeartbeatInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			_ = m.Beat(ctx)
		}
	}
}

// Beat is one heartbeat: see InstanceStore.Beat. When this instance leads
// it also frees the claims of dead instances. Errors are logged (the first
// of a run of failures) and returned.
func (m *Membership) Beat(ctx context.Context) error {
	start := m.cfg.Now()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.DeadAfter)
	defer cancel()
	res, err := m.store.Beat(ctx, m.self, m.cfg.DeadAfter, m.cfg.DeadAfter)
	m.mu.Lock()
	wasJoined, wasLeader, wasFailing := m.joined, start.Before(m.leaderUntil), m.failing
	m.failing = err != nil
	if err == nil {
		m.joined, m.lastBeat = true, start
		m.leaderUntil = time.Time{}
		if res.Leader {
			// The lease runs DeadAfter from the database's now, which is
			// later than start: locally, it ends no later than this.
			m.leaderUntil = start.Add(m.cfg.DeadAfter)
		}
	}
	m.mu.Unlock()
	if err != nil {
		if !wasFailing && ctx.Err() == nil {
			m.log.Warn("heartbeat failed; retrying", "err", err)
		}
		return err
	}
	if wasFailing {
		m.log.Info("heartbeat works again")
	}
	switch {
	case !wasJoined:
		m.log.Info("instance joined the fleet", "host", m.self.Host, "pid", m.self.PID, "leader", res.Leader)
	case res.Registered:
		m.log.Warn("this instance was taken for dead (no heartbeat for DeadAfter) and has registered again; "+
			"its claims were freed for others", "dead_after", m.cfg.DeadAfter)
	}
	if res.Leader && !wasLeader && wasJoined {
		m.log.Info("instance leads the fleet")
	}
	if res.Reaped > 0 {
		m.log.Info("dead instances removed from the registry", "count", res.Reaped)
	}
	if res.Freed > 0 {
		m.log.Warn("took back the claims of dead instances", "claims", res.Freed, "instances", res.Reaped)
	}
	if len(res.Dead) > 0 {
		n, err := m.store.FreeClaimsOf(ctx, res.Dead)
		if err != nil {
			m.log.Error("free the claims of dead instances", "err", err)
			return nil // the next beat tries again
		}
		if n > 0 {
			m.log.Warn("took back the claims of dead instances", "claims", n, "instances", len(res.Dead))
		}
	}
	return nil
}

// Leader reports whether this instance holds the leader's lease now.
func (m *Membership) Leader() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg.Now().Before(m.leaderUntil)
}

// Live reports whether the others still count this instance alive: its
// last successful heartbeat started less than DeadAfter minus one
// HeartbeatInterval ago.
func (m *Membership) Live() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.joined && m.cfg.Now().Sub(m.lastBeat) < m.cfg.DeadAfter-m.cfg.HeartbeatInterval
}

// Leave deletes the registration and gives up the leader's lease, so the
// instance disappears from the list at once and another leads at its next
// heartbeat. It is best effort: an instance that cannot leave is deleted
// by the others DeadAfter later.
func (m *Membership) Leave(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	m.mu.Lock()
	m.joined, m.leaderUntil = false, time.Time{}
	m.mu.Unlock()
	if err := m.store.Leave(ctx, m.self.ID); err != nil {
		m.log.Warn("could not leave the fleet; the others will remove this instance when its heartbeat is stale", "err", err)
		return
	}
	m.log.Info("instance left the fleet")
}
