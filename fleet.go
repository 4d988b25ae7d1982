package herald

import (
	"context"
	"os"
	"runtime/debug"
	"time"

	"github.com/google/uuid"

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
