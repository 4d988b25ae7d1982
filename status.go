package herald

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Status is the state of the whole deployment, read from the database
// (every process running Herald on it), plus this process's circuit
// breaker: what `herald status` prints and an operator reads first.
//
// Each figure is cheap to read on a large table: counts that read rows stop
// at 100,000 (AtLeast says so) and, on a table of more than about 200,000
// deliveries, the finished statuses are the planner's estimates from the
// last ANALYZE (Estimated says so).
type Status struct {
	// At is the database's clock when the status was read; ages are
	// measured on it.
	At time.Time
	// Deliveries counts deliveries by status, open ones first, leaving
	// out statuses no delivery is in.
	Deliveries []StatusCount
	// DueNow is how many open deliveries are due now (pending, due for a
	// retry, or claimed by a sender whose lease ran out); DueNowAtLeast is
	// true when counting stopped at DueNow.
	DueNow        int64
	DueNowAtLeast bool
	// OldestDueAge is how long the longest-waiting due delivery has been
	// due: how far behind the senders are (0 when nothing is due).
	OldestDueAge time.Duration
	// FailedLastHour counts the push attempts that failed in the last
	// hour, by FCM error code ("UNAVAILABLE", "UNREGISTERED"...), the most
	// frequent first: retried, failed for good and dead tokens alike.
	FailedLastHour []CodeCount
	// DeadLetters is how many dead letters wait to be replayed.
	DeadLetters int64
	// Relay is the committed outbox messages the relay has not processed
	// yet and the age of the oldest: the relay's lag.
	Relay RelayBacklog
	// Broadcasts are the broadcasts still expanding, the oldest first (at
	// most 20), with how many deliveries each has created.
	Broadcasts []BroadcastProgress
	// Breaker is this process's FCM circuit breaker: "closed", "open",
	// "half-open", or "" in a Herald without an FCM client (such as the
	// herald command). Each sending process has its own.
	Breaker string
	// Instances are the Heralds running on the database (Herald.Instances),
	// the oldest first; the leader is marked.
	Instances []Instance
	// QuotaPause is how long every instance still holds its pushes because
	// one of them saw a project-wide QUOTA_EXCEEDED (the Retry-After, or
	// Sender.QuotaPause): 0 when no pause holds. It is kept in the database
	// (herald_send_budget.paused_until), so restarting does not lift it.
	QuotaPause time.Duration
}

// Status reads the deployment's state from the database in one read-only
// transaction: deliveries by status, what is due and for how long, the last
// hour's failures by FCM code, dead letters, the relay's backlog and lag,
// open broadcasts, and this process's breaker. It works in a Herald made
// without an FCM client.
func (h *Herald) Status(ctx context.Context) (Status, error) {
	r, err := h.status.Status(ctx)
	if err != nil {
		return Status{}, h.explainSchema(ctx, err)
	}
	s := Status{
		At: r.At, Deliveries: r.Deliveries, DueNow: r.DueNow, DueNowAtLeast: r.DueNowAtLeast,
		OldestDueAge: r.OldestDueAge, FailedLastHour: r.FailedLastHour, DeadLetters: r.DeadLetters,
		Relay: r.Relay, Broadcasts: r.Broadcasts, QuotaPause: r.QuotaPause,
	}
	if h.fcm != nil {
		s.Breaker = h.fcm.BreakerState()
	}
	if s.Instances, err = h.Instances(ctx); err != nil {
		return Status{}, err
	}
	return s, nil
}

// statusJSON is the stable JSON form of Status: snake_case names and
// durations as Go duration strings ("1.5s").
type statusJSON struct {
	At             time.Time         `json:"at"`
	Deliveries     []statusCountJSON `json:"deliveries"`
	DueNow         int64             `json:"due_now"`
	DueNowAtLeast  bool              `json:"due_now_at_least,omitempty"`
	OldestDueAge   string            `json:"oldest_due_age"`
	FailedLastHour []codeCountJSON   `json:"failed_last_hour"`
	DeadLetters    int64             `json:"dead_letters"`
	Relay          struct {
		Backlog        int64  `json:"backlog"`
		BacklogAtLeast bool   `json:"backlog_at_least,omitempty"`
		Lag            string `json:"lag"`
	} `json:"relay"`
	Broadcasts []broadcastJSON `json:"broadcasts"`
	Breaker    string          `json:"breaker"`
	Instances  []instanceJSON  `json:"instances"`
	QuotaPause string          `json:"quota_pause"`
}

type instanceJSON struct {
	ID           string    `json:"id"`
	Host         string    `json:"host"`
	PID          int       `json:"pid"`
	Version      string    `json:"version"`
	StartedAt    time.Time `json:"started_at"`
	HeartbeatAt  time.Time `json:"heartbeat_at"`
	HeartbeatAge string    `json:"heartbeat_age"`
	Leader       bool      `json:"leader"`
}

type statusCountJSON struct {
	Status    string `json:"status"`
	Count     int64  `json:"count"`
	AtLeast   bool   `json:"at_least,omitempty"`
	Estimated bool   `json:"estimated,omitempty"`
}

type codeCountJSON struct {
	Code  string `json:"code"`
	Count int64  `json:"count"`
}

type broadcastJSON struct {
	NotificationID uuid.UUID  `json:"notification_id"`
	Type           string     `json:"type"`
	Recipient      string     `json:"recipient,omitempty"`
	Platforms      []string   `json:"platforms,omitempty"`
	Expanded       int64      `json:"expanded"`
	Refused        int64      `json:"refused,omitempty"`
	Refusal        string     `json:"refusal,omitempty"`
	HeldUntil      *time.Time `json:"held_until,omitempty"`
	Holds          int        `json:"holds,omitempty"`
	HeldReason     string     `json:"held_reason,omitempty"`
	Tokens         int64      `json:"tokens_estimate,omitempty"`
	StartedAt      time.Time  `json:"started_at"`
	Age            string     `json:"age"`
}

// readable is how Status and Stats write a duration in JSON.
func readable(d time.Duration) string { return d.Round(time.Millisecond).String() }

// MarshalJSON encodes Status for a status endpoint, a script or `herald
// status -json`, with stable snake_case names and durations as Go
// duration strings ("oldest_due_age": "1.5s", "lag": "0s"). Empty lists
// are [] rather than null.
func (s Status) MarshalJSON() ([]byte, error) {
	j := statusJSON{At: s.At, Deliveries: []statusCountJSON{}, FailedLastHour: []codeCountJSON{},
		Broadcasts: []broadcastJSON{}, Breaker: s.Breaker, Instances: []instanceJSON{}}
	for _, c := range s.Deliveries {
		j.Deliveries = append(j.Deliveries, statusCountJSON{string(c.Status), c.Count, c.AtLeast, c.Estimated})
	}
	j.DueNow, j.DueNowAtLeast, j.OldestDueAge = s.DueNow, s.DueNowAtLeast, readable(s.OldestDueAge)
	for _, c := range s.FailedLastHour {
		j.FailedLastHour = append(j.FailedLastHour, codeCountJSON{c.Code, c.Count})
	}
	j.DeadLetters, j.QuotaPause = s.DeadLetters, readable(s.QuotaPause)
	j.Relay.Backlog, j.Relay.BacklogAtLeast, j.Relay.Lag = s.Relay.Messages, s.Relay.AtLeast, readable(s.Relay.OldestAge)
	for _, b := range s.Broadcasts {
		bj := broadcastJSON{NotificationID: b.NotificationID, Type: b.Type,
			Recipient: b.Recipient, Platforms: b.Platforms, Expanded: b.Expanded, Refused: b.Refused, Refusal: b.Refusal, Tokens: b.Tokens,
			StartedAt: b.StartedAt, Age: readable(max(0, s.At.Sub(b.StartedAt)))}
		if !b.HeldUntil.IsZero() {
			bj.HeldUntil, bj.Holds, bj.HeldReason = &b.HeldUntil, b.Holds, b.HeldReason
		}
		j.Broadcasts = append(j.Broadcasts, bj)
	}
	for _, in := range s.Instances {
		j.Instances = append(j.Instances, instanceJSON{ID: in.ID, Host: in.Host, PID: in.PID, Version: in.Version,
			StartedAt: in.StartedAt, HeartbeatAt: in.HeartbeatAt, HeartbeatAge: readable(max(0, s.At.Sub(in.HeartbeatAt))),
			Leader: in.Leader})
	}
	return json.Marshal(j)
}
