package telemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// DatabaseSnapshot is what the database-wide gauges show: the same for
// every instance asked, read from the database.
type DatabaseSnapshot struct {
	// Deliveries counts deliveries by status; only the statuses the
	// reader reports are shown (Herald's: the open ones and failed).
	Deliveries map[string]int64
	// OldestDueAge is how long the oldest due delivery has been due.
	OldestDueAge time.Duration
	// DeadLetters counts dead letters not replayed.
	DeadLetters int64
}

// ObserveDatabase registers the database-wide gauges: deliveries by status,
// the oldest due delivery's age, dead letters not replayed. read is called
// from the metric reader's collection at most once per every (the last
// answer is shown in between), so however often a scraper asks, the
// database sees one small query per interval. A failed read shows nothing
// for that collection. Unregister the returned registration to stop.
func (t *Telemetry) ObserveDatabase(read func(context.Context) (DatabaseSnapshot, error), every time.Duration) (metric.Registration, error) {
	m := t.meter
	deliveries, err := m.Int64ObservableGauge("herald.deliveries", metric.WithUnit("{delivery}"),
		metric.WithDescription("Deliveries by herald.delivery.status, read from the database (all instances)"))
	if err != nil {
		return nil, err
	}
	oldest, err := m.Float64ObservableGauge("herald.deliveries.oldest_due_age", metric.WithUnit("s"),
		metric.WithDescription("How long the oldest due delivery has waited past its due time, read from the database (0 when none is due)"))
	if err != nil {
		return nil, err
	}
	dead, err := m.Int64ObservableGauge("herald.dead_letters.pending", metric.WithUnit("{message}"),
		metric.WithDescription("Dead letters not replayed, read from the database"))
	if err != nil {
		return nil, err
	}
	c := &snapshotCache{read: read, every: every, sets: map[string]metric.ObserveOption{}}
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		snap, ok := c.get(ctx)
		if !ok {
			return nil
		}
		for status, n := range snap.Deliveries {
			o.ObserveInt64(deliveries, n, c.set(status))
		}
		o.ObserveFloat64(oldest, snap.OldestDueAge.Seconds())
		o.ObserveInt64(dead, snap.DeadLetters)
		return nil
	}, deliveries, oldest, dead)
}

type snapshotCache struct {
	read  func(context.Context) (DatabaseSnapshot, error)
	every time.Duration

	mu   sync.Mutex
	at   time.Time
	snap DatabaseSnapshot
	ok   bool
	sets map[string]metric.ObserveOption
}

func (c *snapshotCache) get(ctx context.Context) (DatabaseSnapshot, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < c.every {
		return c.snap, c.ok
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	snap, err := c.read(ctx)
	c.at, c.snap, c.ok = time.Now(), snap, err == nil
	return c.snap, c.ok
}

// set returns the observe option of status, made once.
func (c *snapshotCache) set(status string) metric.ObserveOption {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.sets[status]
	if !ok {
		o = metric.WithAttributeSet(attribute.NewSet(keyStatus.String(status)))
		c.sets[status] = o
	}
	return o
}

// ObserveSender registers this process's sender gauges: pushes in flight
// now, how many may be (the adaptive limit, or MaxInFlight), and the
// circuit breaker's state (1 for the current state, 0 for the others, as
// Prometheus state gauges go). Any function may be nil.
func (t *Telemetry) ObserveSender(inFlight, inFlightLimit func() int64, breakerState func() string) (metric.Registration, error) {
	m := t.meter
	flight, err := m.Int64ObservableGauge("herald.sender.in_flight", metric.WithUnit("{push}"),
		metric.WithDescription("Pushes in flight in this process"))
	if err != nil {
		return nil, err
	}
	limit, err := m.Int64ObservableGauge("herald.sender.in_flight_limit", metric.WithUnit("{push}"),
		metric.WithDescription("Pushes that may be in flight in this process: Sender.MaxInFlight, or the adaptive limit"))
	if err != nil {
		return nil, err
	}
	state, err := m.Int64ObservableGauge("herald.breaker.state",
		metric.WithDescription("The FCM circuit breaker's state in this process: 1 on the herald.breaker.state it is in (closed, half-open, open), 0 on the others"))
	if err != nil {
		return nil, err
	}
	states := []string{"closed", "half-open", "open"}
	sets := make([]metric.ObserveOption, len(states))
	for i, s := range states {
		sets[i] = metric.WithAttributeSet(attribute.NewSet(keyBreakerState.String(s)))
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if inFlight != nil {
			o.ObserveInt64(flight, inFlight())
		}
		if inFlightLimit != nil {
			o.ObserveInt64(limit, inFlightLimit())
		}
		if breakerState != nil {
			cur := breakerState()
			for i, s := range states {
				var v int64
				if s == cur {
					v = 1
				}
				o.ObserveInt64(state, v, sets[i])
			}
		}
		return nil
	}, flight, limit, state)
}
