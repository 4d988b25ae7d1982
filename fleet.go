package herald

import (
	"context"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/app"
)

// Instance is one running Herald on the database: a process inside Run.
type Instance struct {
	// ID is the instance's id, new for each Herald made by New.
	ID string
	// Host is the machine's host name, PID the process id.
	Host string
	PID  int
	// Version is Herald's module version in the binary ("(devel)" when
	// built from a checkout).
	Version string
	// StartedAt is when it registered, HeartbeatAt its last heartbeat,
	// both on the database's clock.
	StartedAt, HeartbeatAt time.Time
	// Leader is true for the one instance that holds the leader's lease
	// (and so sweeps old rows).
	Leader bool
}

// Instances lists the Heralds running on the database (inside Run, their
// last heartbeat younger than Fleet.DeadAfter), the oldest first. Any
// Herald may ask, one that does not send included. An instance that stops
// leaves the list at once; one that dies leaves it DeadAfter after its last
// heartbeat.
func (h *Herald) Instances(ctx context.Context) ([]Instance, error) {
	list, err := h.fleet.Instances(ctx, h.deadAfter)
	if err != nil {
		return nil, h.explainSchema(ctx, err)
	}
	out := make([]Instance, len(list))
	for i, in := range list {
		out[i] = Instance{ID: in.ID.String(), Host: in.Host, PID: in.PID, Version: in.Version,
			StartedAt: in.StartedAt, HeartbeatAt: in.HeartbeatAt, Leader: in.Leader}
	}
	return out, nil
}

// thisInstance describes this process for the registry.
func thisInstance() app.InstanceInfo {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return app.InstanceInfo{ID: uuid.New(), Host: host, PID: os.Getpid(), Version: moduleVersion()}
}

// moduleVersion is Herald's version in this binary.
func moduleVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	const path = "github.com/herald-push/herald"
	if info.Main.Path == path {
		return info.Main.Version
	}
	for _, dep := range info.Deps {
		if dep.Path == path {
			return dep.Version
		}
	}
	return "unknown"
}

// fleetDB is the database of the fleet's coordination: while Run runs, a
// small pool of its own (fleetConns connections), so that heartbeats and
// send-budget grants never queue behind the sender's claims and checks for
// a connection of the host's pool (a heartbeat delayed past DeadAfter would
// make the others take this instance for dead); otherwise the host's pool.
type fleetDB struct {
	main *pgxpool.Pool
	own  atomic.Pointer[pgxpool.Pool]
}

// fleetConns is the size of Run's own pool for the fleet: one for the
// heartbeat, one for grants.
const fleetConns = 2

func (d *fleetDB) pick() *pgxpool.Pool {
	if p := d.own.Load(); p != nil {
		return p
	}
	return d.main
}

// open gives Run its own pool; the returned func closes it.
func (d *fleetDB) open(ctx context.Context) func() {
	cfg := d.main.Config().Copy()
	cfg.MaxConns, cfg.MinConns = fleetConns, 0
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return func() {} // the host's pool serves, as for a Herald that does not run
	}
	d.own.Store(p)
	return func() {
		d.own.Store(nil)
		p.Close()
	}
}

func (d *fleetDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return d.pick().Exec(ctx, sql, args...)
}

func (d *fleetDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return d.pick().Query(ctx, sql, args...)
}

func (d *fleetDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return d.pick().QueryRow(ctx, sql, args...)
}

func (d *fleetDB) Begin(ctx context.Context) (pgx.Tx, error) { return d.pick().Begin(ctx) }

func (d *fleetDB) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return d.pick().SendBatch(ctx, b)
}
