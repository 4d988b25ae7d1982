package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/internal/backoff"
	"github.com/herald-push/herald/internal/settings"
)

// BroadcastStore expands broadcasts into deliveries, one bounded chunk at a
// time.
type BroadcastStore interface {
	// ExpandBroadcastChunk creates the deliveries of the next chunk of at
	// most limit tokens of one unfinished broadcast, in one short
	// transaction, and reports what it did. The deliveries are due at the
	// store's clock.
	ExpandBroadcastChunk(ctx context.Context, limit int) (BroadcastChunk, error)
}

// BroadcastChunk is what one ExpandBroadcastChunk did.
type BroadcastChunk struct {
	// Found is whether there was a broadcast to work on; NotificationID is
	// its notification.
	Found          bool
	NotificationID uuid.UUID
	// Created is how many deliveries it created.
	Created int
	// Refused is how many of the chunk's deliveries the database refused (a
	// host's own trigger, CHECK or foreign key on herald_deliveries): those
	// tokens get no delivery and are counted on the broadcast; the rest of
	// the chunk got theirs.
	Refused int
	// Held is set when the database refused every delivery of the chunk and
	// none of Herald's deliveries has been seen accepted since its last
	// refusal: that is the host refusing Herald (a freeze), not the tokens,
	// so nothing is skipped; the broadcast waits HeldFor, and other
	// broadcasts are expanded meanwhile.
	Held    bool
	HeldFor time.Duration
	// Refusal is the last refusal's reason, its token shown only by its
	// hash, when Refused or Held.
	Refusal string
}

// BroadcastExpanderConfig configures a BroadcastExpander. Zero values mean
// defaults. Each setting is documented, with its default, on
// herald.BroadcastConfig, which hosts set.
type BroadcastExpanderConfig struct {
	ChunkSize    int
	PollInterval time.Duration
	// Logger receives errors, and warnings of deliveries the database
	// refused (counted and skipped, or their broadcast held), each kind in
	// one line per BroadcastWarningInterval with its count. Defaults to
	// discarding.
	Logger *slog.Logger
	// Now is the clock for those warnings. Defaults to time.Now.
	Now func() time.Time
}

// BroadcastWarningInterval is how often at most the broadcast expander logs
// each kind of warning (deliveries refused and skipped, broadcasts held): a
// host constraint refusing a million tokens, or a freeze holding every
// broadcast, writes one line per interval, with the count of chunks it
// stands for, not one per chunk.
const BroadcastWarningInterval = 10 * time.Second

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
	// warnings aggregates the refusals' warnings.
	warnings *alarmLog
	wake     chan struct{}
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
	log := cfg.Logger.With("component", "herald_broadcast")
	return &BroadcastExpander{store: store, cfg: cfg, log: log, warnings: newAlarmLog(log, BroadcastWarningInterval, nil),
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
// backoff (which Wake does not cut short). Deliveries the database refused
// are logged as warnings, at most one line of each kind per
// BroadcastWarningInterval.
func (e *BroadcastExpander) Run(ctx context.Context) error {
	retry := backoff.New(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		e.warnings.flush(e.cfg.Now())
		chunk, err := e.store.ExpandBroadcastChunk(ctx, e.cfg.ChunkSize)
		switch {
		case err != nil && ctx.Err() == nil:
			wait := retry.Next()
			e.log.Error("expand broadcast", "err", err, "retry_in", wait)
			e.sleep(ctx, wait, nil)
		case err == nil && chunk.Found:
			retry.Reset()
			e.warn(chunk)
		default:
			retry.Reset()
			e.sleep(ctx, e.cfg.PollInterval, e.wake)
		}
	}
	return nil
}

// warn logs the chunk's refusals. The refusal is the store's, its token
// shown only by its hash; no token or message body is logged.
func (e *BroadcastExpander) warn(chunk BroadcastChunk) {
	if chunk.Refused > 0 {
		e.warnings.add(e.cfg.Now(), "broadcast_refused", slog.LevelWarn,
			"the database refused some deliveries of a broadcast: those tokens get none, the others do (the latest chunk named)",
			"notification_id", chunk.NotificationID, "refused", chunk.Refused, "refusal", chunk.Refusal)
	}
	if chunk.Held {
		e.warnings.add(e.cfg.Now(), "broadcast_held", slog.LevelWarn,
			"the database refused every delivery of a broadcast's chunk and no other delivery since: "+
				"the broadcast is held, nothing skipped, and tried again (the latest named)",
			"notification_id", chunk.NotificationID, "retry_in", chunk.HeldFor, "refusal", chunk.Refusal)
	}
}

// sleep waits d, or until ctx ends or wake (which may be nil) receives.
func (e *BroadcastExpander) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) {
	select {
	case <-wake:
	case <-e.after(d):
	case <-ctx.Done():
	}
}
