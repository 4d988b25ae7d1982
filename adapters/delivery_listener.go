package adapters

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ListenForDeliveries calls wake each time a transaction that created
// deliveries commits (the relay signals deliveriesChannel), in this process
// or any other on the same database, so a sender can claim at once instead
// of waiting for its next poll. It holds one connection of pool, reconnects
// after errors, and returns when ctx ends. log may be nil.
func ListenForDeliveries(ctx context.Context, pool *pgxpool.Pool, wake func(), log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	const firstWait = 100 * time.Millisecond
	wait := firstWait
	for ctx.Err() == nil {
		listened, err := listenOnce(ctx, pool, wake)
		if ctx.Err() != nil {
			return
		}
		if listened {
			wait = firstWait // it worked until now: back off from the start again
		}
		log.Warn("delivery listener lost its connection; reconnecting", "err", err, "retry_in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		wait = min(wait*2, 5*time.Second)
	}
}

func listenOnce(ctx context.Context, pool *pgxpool.Pool, wake func()) (listened bool, err error) {
	pooled, err := pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	// A listening connection must not go back to the pool.
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+deliveriesChannel); err != nil {
		return false, err
	}
	wake() // deliveries may have been created while we were not listening
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return true, err
		}
		wake()
	}
}
