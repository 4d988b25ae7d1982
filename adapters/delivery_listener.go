package adapters

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DeliverySignals says how ListenForDeliveries learns that deliveries were
// created. Exactly one way is used, the first set of: ListenURL, Pool,
// PollInterval.
type DeliverySignals struct {
	// ListenURL is a connection string for a direct session to Postgres
	// (not through a transaction pooler): LISTEN runs on a connection of
	// its own, opened with it.
	ListenURL string
	// Pool: LISTEN runs on a connection taken out of it for good. Only for
	// a pool whose connections keep their session (direct, or a pooler in
	// session mode): through a transaction pooler, LISTEN registers on
	// whichever server session is lent, and notifications never come back.
	Pool *pgxpool.Pool
	// PollInterval: there is no session to LISTEN on, so wake is called
	// this often instead; also the fallback when LISTEN proves deaf.
	PollInterval time.Duration
	// Check, if set, is a pool through which each new LISTEN is checked:
	// a NOTIFY sent through it on a channel of the listener's own must be
	// heard within listenCheckTimeout. Through a transaction pooler it
	// never is (the LISTEN stayed on a server session the listener no
	// longer holds), so the listener falls back to polling every
	// PollInterval and says so, rather than wait deaf.
	Check *pgxpool.Pool
}

// listenCheckTimeout bounds the wait for the NOTIFY that checks a new
// LISTEN. Directly it comes back in milliseconds.
const listenCheckTimeout = 5 * time.Second

// errDeafListen is a LISTEN that did not hear its check NOTIFY.
var errDeafListen = errors.New("LISTEN did not hear a NOTIFY sent through the pool")

// ListenForDeliveries calls wake each time a transaction that created
// deliveries commits (the relay signals deliveriesChannel), in this process
// or any other on the same database, so a sender can claim at once instead
// of waiting for its next poll; or, with signals.PollInterval only, calls
// wake that often. It logs once, at start, which way it learns of new
// deliveries (a WARN when it can only poll). It reconnects after errors and
// returns when ctx ends. log may be nil.
func ListenForDeliveries(ctx context.Context, signals DeliverySignals, wake func(), log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var connect func(context.Context) (*pgx.Conn, error)
	switch {
	case signals.ListenURL != "":
		log.Info("new deliveries wake the sender: LISTEN on a direct session (Pooler.ListenURL)")
		connect = func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, signals.ListenURL) }
	case signals.Pool != nil:
		log.Info("new deliveries wake the sender: LISTEN on a connection of the pool")
		connect = func(ctx context.Context) (*pgx.Conn, error) {
			pooled, err := signals.Pool.Acquire(ctx)
			if err != nil {
				return nil, err
			}
			// A listening connection must not go back to the pool.
			return pooled.Hijack(), nil
		}
	default:
		log.Warn("behind a transaction pooler without Pooler.ListenURL, LISTEN cannot work: "+
			"the sender and broadcast expander look for new deliveries every poll interval instead",
			"poll_interval", signals.PollInterval)
		poll(ctx, signals.PollInterval, wake)
		return
	}
	const firstWait = 100 * time.Millisecond
	wait := firstWait
	for ctx.Err() == nil {
		listened, err := listenOnce(ctx, connect, signals.Check, wake)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errDeafListen) {
			log.Warn("LISTEN did not hear a NOTIFY sent through the pool: the connection goes through a transaction pooler "+
				"(set Pooler.ListenURL to a direct connection); the sender and broadcast expander look for new deliveries "+
				"every poll interval instead", "poll_interval", signals.PollInterval)
			poll(ctx, signals.PollInterval, wake)
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

// poll calls wake every interval until ctx ends.
func poll(ctx context.Context, interval time.Duration, wake func()) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			wake()
		}
	}
}

func listenOnce(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), check *pgxpool.Pool, wake func()) (listened bool, err error) {
	conn, err := connect(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+deliveriesChannel); err != nil {
		return false, err
	}
	wake() // deliveries may have been created while we were not listening
	if check != nil {
		if err := checkListen(ctx, conn, check, wake); err != nil {
			return false, err
		}
	}
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return true, err
		}
		wake()
	}
}

// checkListen LISTENs on conn to a channel of its own, sends a NOTIFY on it
// through check, another client, and waits up to listenCheckTimeout to hear
// it (errDeafListen if not); notifications on the deliveries' channel
// meanwhile call wake.
func checkListen(ctx context.Context, conn *pgx.Conn, check *pgxpool.Pool, wake func()) error {
	tag := make([]byte, 8)
	_, _ = rand.Read(tag) // never fails
	channel := "herald_listen_check_" + hex.EncodeToString(tag)
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	if _, err := check.Exec(ctx, `SELECT pg_notify($1, '')`, channel); err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, listenCheckTimeout)
	defer cancel()
	for {
		n, err := conn.WaitForNotification(waitCtx)
		if err != nil {
			if ctx.Err() == nil && waitCtx.Err() != nil {
				return errDeafListen
			}
			return err
		}
		if n.Channel == channel {
			_, err := conn.Exec(ctx, "UNLISTEN "+channel)
			return err
		}
		wake()
	}
}
