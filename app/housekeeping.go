package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/herald-push/herald/internal/settings"
)

// HousekeepingStore deletes what Herald no longer needs, each call one
// bounded batch. Ages are measured on the store's clock (the database's),
// the clock that wrote the rows' times, so an application server whose
// clock is off never deletes early.
type HousekeepingStore interface {
	DeleteConsumedOutbox(ctx context.Context, olderThan time.Duration, limit int) (int, error)
	// DeleteFinishedDeliveries deletes sent, token-pruned and token-moved
	// deliveries older than olderThan and failed ones older than
	// failedOlderThan; a negative age deletes none of those.
	DeleteFinishedDeliveries(ctx context.Context, olderThan, failedOlderThan time.Duration, limit int) (int, error)
	DeleteFinishedBroadcasts(ctx context.Context, olderThan time.Duration, limit int) (int, error)
	DeleteReplayedDeadLetters(ctx context.Context, olderThan time.Duration, limit int) (int, error)
	DeleteTokensUnseenFor(ctx context.Context, olderThan time.Duration, limit int) (int, error)
	// DeleteIdleDeviceRates deletes per-device counts whose hour window
	// ended: they no longer limit anything.
	DeleteIdleDeviceRates(ctx context.Context, limit int) (int, error)
	// DeleteOldNotifications deletes notifications (with their finished
	// deliveries) created more than readOlderThan ago and read, or more
	// than unreadOlderThan ago and unread; zero or a negative age deletes
	// none of those. A notification with a delivery still open is kept.
	DeleteOldNotifications(ctx context.Context, readOlderThan, unreadOlderThan time.Duration, limit int) (int, error)
}

// HousekeepingConfig configures a Housekeeper. Zero values mean defaults;
// a negative retention turns that sweep off. Each setting is documented,
// with its default, on herald.HousekeepingConfig, which hosts set.
type HousekeepingConfig struct {
	Interval                                                         time.Duration
	BatchSize                                                        int
	OutboxRetention, DeliveryRetention, FailedRetention, TokenMaxAge time.Duration
	// ReadRetention and UnreadRetention default to -1: off, the inbox is
	// kept.
	ReadRetention, UnreadRetention time.Duration
	// Logger receives what each sweep removed. Defaults to discarding.
	Logger *slog.Logger
	// Leader reports whether this instance leads the fleet: Run sweeps
	// only while it does, so one instance at a time sweeps. Nil means
	// always (a single instance).
	Leader func() bool
}

// Validate reports every invalid field at once, in field order.
func (c HousekeepingConfig) Validate() error {
	return errors.Join(settings.NotNegative("Interval", c.Interval), settings.NotNegative("BatchSize", c.BatchSize))
}

func (c *HousekeepingConfig) setDefaults() {
	settings.Default(&c.Interval, 10*time.Minute)
	settings.Default(&c.OutboxRetention, time.Hour)
	settings.Default(&c.DeliveryRetention, 7*24*time.Hour)
	settings.Default(&c.FailedRetention, 30*24*time.Hour)
	settings.Default(&c.TokenMaxAge, 270*24*time.Hour)
	settings.Default(&c.BatchSize, 5000)
	settings.Default(&c.ReadRetention, -1)
	settings.Default(&c.UnreadRetention, -1)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// HousekeepingReport counts what one sweep removed.
type HousekeepingReport struct {
	OutboxRows, Deliveries, Broadcasts, DeadLetters, Tokens, DeviceRates, Notifications int
}

// Housekeeper keeps Herald's tables small over months: consumed outbox rows
// (watermill never deletes them), old finished deliveries and broadcasts,
// replayed dead letters, expired tokens and idle per-device counts. The
// inbox (notifications) is kept unless ReadRetention or UnreadRetention is
// set.
type Housekeeper struct {
	store HousekeepingStore
	cfg   HousekeepingConfig
	log   *slog.Logger
}

// NewHousekeeper returns a Housekeeper on store, which must not be nil.
func NewHousekeeper(store HousekeepingStore, cfg HousekeepingConfig) (*Housekeeper, error) {
	if store == nil {
		panic("app: NewHousekeeper: nil store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid housekeeping config: %w", err)
	}
	cfg.setDefaults()
	return &Housekeeper{store: store, cfg: cfg, log: cfg.Logger.With("component", "herald_housekeeping")}, nil
}

// Run sweeps every Interval until ctx ends, then returns nil.
func (h *Housekeeper) Run(ctx context.Context) error {
	ticker := time.NewTicker(h.cfg.Interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		if h.cfg.Leader != nil && !h.cfg.Leader() {
			continue
		}
		report, err := h.Sweep(ctx)
		if err != nil && ctx.Err() == nil {
			h.log.Error("housekeeping sweep", "err", err)
		}
		if report != (HousekeepingReport{}) {
			h.log.Info("housekeeping sweep", "outbox_rows", report.OutboxRows, "deliveries", report.Deliveries,
				"broadcasts", report.Broadcasts, "dead_letters", report.DeadLetters, "tokens", report.Tokens,
				"device_rates", report.DeviceRates, "notifications", report.Notifications)
		}
	}
}

// inboxRetention is -1 (off) unless read or unread notifications have a
// retention.
func (h *Housekeeper) inboxRetention() time.Duration {
	if h.cfg.ReadRetention <= 0 && h.cfg.UnreadRetention <= 0 {
		return -1
	}
	return 0
}

// Sweep deletes, batch by batch, everything past its retention (measured
// on the database's clock), and reports what it removed. A table whose
// sweep fails is reported in the error, and the other tables are swept
// anyway. Run calls it on
// the fleet's leader only; two sweeps at once would only share the work,
// each delete being a bounded batch of rows past their retention.
func (h *Housekeeper) Sweep(ctx context.Context) (HousekeepingReport, error) {
	var report HousekeepingReport
	sweeps := []struct {
		retention time.Duration
		count     *int
		batch     func(limit int) (int, error)
	}{
		{h.cfg.OutboxRetention, &report.OutboxRows, func(limit int) (int, error) {
			return h.store.DeleteConsumedOutbox(ctx, h.cfg.OutboxRetention, limit)
		}},
		{h.cfg.DeliveryRetention, &report.Deliveries, func(limit int) (int, error) {
			return h.store.DeleteFinishedDeliveries(ctx, h.cfg.DeliveryRetention, h.cfg.FailedRetention, limit)
		}},
		{h.cfg.DeliveryRetention, &report.Broadcasts, func(limit int) (int, error) {
			return h.store.DeleteFinishedBroadcasts(ctx, h.cfg.DeliveryRetention, limit)
		}},
		{h.cfg.FailedRetention, &report.DeadLetters, func(limit int) (int, error) {
			return h.store.DeleteReplayedDeadLetters(ctx, h.cfg.FailedRetention, limit)
		}},
		{h.cfg.TokenMaxAge, &report.Tokens, func(limit int) (int, error) {
			return h.store.DeleteTokensUnseenFor(ctx, h.cfg.TokenMaxAge, limit)
		}},
		{0, &report.DeviceRates, func(limit int) (int, error) {
			return h.store.DeleteIdleDeviceRates(ctx, limit)
		}},
		{h.inboxRetention(), &report.Notifications, func(limit int) (int, error) {
			return h.store.DeleteOldNotifications(ctx, h.cfg.ReadRetention, h.cfg.UnreadRetention, limit)
		}},
	}
	// A sweep that fails does not stop the others: one row a host's table
	// holds on to (a foreign key, a trigger) fails its table's batch at
	// every run, and before, every table after it was never swept again.
	var errs []error
	for _, s := range sweeps {
		if s.retention < 0 || ctx.Err() != nil {
			continue
		}
		for {
			n, err := s.batch(h.cfg.BatchSize)
			*s.count += n
			if err != nil {
				errs = append(errs, err)
				break
			}
			if n < h.cfg.BatchSize || ctx.Err() != nil {
				break
			}
		}
	}
	return report, errors.Join(errs...)
}
