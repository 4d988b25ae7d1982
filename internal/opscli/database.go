package opscli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
)

// connectDatabase opens DATABASE_URL for operator commands, which never
// start a throwaway database.
func connectDatabase(ctx context.Context) (*pgxpool.Pool, error) {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		return nil, errors.New("DATABASE_URL is not set")
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return pool, nil
}

// operator connects to DATABASE_URL and returns a Herald that does not
// send (no FCM client, no rules: it never raises either) for the operator
// actions, logging to stderr, and the pool to close when done. The
// commands act only through its methods, as a host's admin page does.
func operator(ctx context.Context, stderr io.Writer) (*herald.Herald, *pgxpool.Pool, error) {
	pool, err := connectDatabase(ctx)
	if err != nil {
		return nil, nil, err
	}
	h, err := herald.New(pool, nil, notification.NewRules(), herald.Config{Logger: slog.New(slog.NewTextHandler(stderr, nil))})
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return h, pool, nil
}
