package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/herald-push/herald/internal/backoff"
	"github.com/herald-push/herald/internal/settings"
)

// BroadcastStore expands broadcasts into deliveries, one bounded chunk at a
// time.
type BroadcastStore interface {
	// ExpandBroadcastChunk creates the deliveries of the next chunk of at
	// most limit tokens of one unfinished broadcast, in one short
	// transaction, and reports how many it created and whether it found a
	// broadcast to work on. The deliveries are due at the store's clock.
	ExpandBroadcastChunk(ctx context.Context, limit int) (created int, found bool, err error)
}

// BroadcastExpanderConfig configures a BroadcastExpander. Zero values mean
// defaults. Each setting is documented, with its default, on
// herald.BroadcastConfig, which hosts set.
type BroadcastExpanderConfig struct {
	ChunkSize    int
	PollInterval time.Duration
	// Logger receives errors. Defaults to discarding.
	Logger *slog.Logger
}

// Validate reports every invalid field at once, in field order.
func (c BroadcastExpanderConfig) Validate() error {
	return errors.Join(settings.NotNegative("ChunkSize", c.ChunkSize), settings.NotNegative("PollInterval", c.PollInterval))
}

// BroadcastExpander turns broadcasts into deliveries in bounded chunks, so
// an audience of millions never sits in memory or in one transaction.
// Several processes may each run one; they share the work chunk by chunk.
type BroadcastExpander struct {
	store BroadcastStore
	cfg   BroadcastExpanderConfig
	log   *slog.Logger
	wake  chan struct{}
	// after is time.After; tests replace it to move time themselves.
	after func(time.Duration) <-chan time.Time
}

// NewBroadcastExpander returns an expander on store, which must not be nil.
func NewBroadcastExpander(store BroadcastStore, cfg BroadcastExpanderConfig) (*BroadcastExpander, error) {
	if store == nil {
		panic("app: NewBroadcastExpander: nil store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid broadcast expander config: %w", err)
	}
	cfg.setDefaults()
	return &BroadcastExpander{store: store, cfg: cfg, log: cfg.Logger.With("component", "herald_broadcast"),
		wake: make(chan struct{}, 1), after: time.After}, nil
}

// Wake tells the expander a broadcast may be waiting. It never blocks.
func (e *BroadcastExpander) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run expands broadcasts until ctx ends, then returns nil. It expands
// chunk after chunk while it finds work; when there is none it sleeps
// PollInterval or until Wake. Database errors are logged and retried with
// backoff (which Wake does not cut short).
func (e *BroadcastExpander) Run(ctx context.Context) error {
	retry := backoff.New(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		_, found, err := e.store.ExpandBroadcastChunk(ctx, e.cfg.ChunkSize)
		switch {
		case err != nil && ctx.Err() == nil:
			wait := retry.Next()
			e.log.Error("expand broadcast", "err", err, "retry_in", wait)
			e.sleep(ctx, wait, nil)
		case err == nil && found:
			retry.Reset()
		default:
			retry.Reset()
			e.sleep(ctx, e.cfg.PollInterval, e.wake)
		}
	}
	return nil
}

// sleep waits d, or until ctx ends or wake (which may be nil) receives.
func (e *BroadcastExpander) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) {
	select {
	case <-wake:
	case <-e.after(d):
	case <-ctx.Done():
	}
}
