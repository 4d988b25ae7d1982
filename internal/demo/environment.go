package demo

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/internal/pgcluster"
	"github.com/herald-push/herald/migrations"
)

// environment is where a command runs: a database and an FCM, real when
// configured, embedded otherwise.
type environment struct {
	Pool    *pgxpool.Pool
	URL     string
	Cluster *pgcluster.Cluster // nil when DATABASE_URL is used
	FCM     *herald.FCM        // serves one Herald
	Fake    *fakefcm.Server    // nil when real FCM is used
	closers []func()
}

type envOptions struct {
	// FakeFCM configures the fake when no real FCM is configured.
	FakeFCM fakefcm.Config
	// ForceEmbedded ignores DATABASE_URL and FCM credentials (benchmarks
	// and chaos runs need a fake they can script and count).
	ForceEmbedded bool
	// MaxConns sizes the pool. Defaults to 20.
	MaxConns int32
	Log      *slog.Logger
}

// realFCMConfigured reports whether the user asked for real FCM.
func realFCMConfigured() bool {
	return os.Getenv("GOOGLE_APPLICATION_CREDENTIALS") != "" || os.Getenv("HERALD_FCM") == "real"
}

// openEnvironment starts or connects to a database (migrated) and an FCM.
func openEnvironment(ctx context.Context, opts envOptions) (_ *environment, err error) {
	env := &environment{}
	defer func() {
		if err != nil {
			env.Close() // env, not the nil result: release what was started
		}
	}()
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	url := os.Getenv("DATABASE_URL")
	if url == "" || opts.ForceEmbedded {
		log.Info("starting a throwaway postgres")
		cluster, err := pgcluster.Start(ctx, pgcluster.Config{})
		if err != nil {
			return nil, fmt.Errorf("start throwaway postgres: %w", err)
		}
		env.Cluster = cluster
		env.closers = append(env.closers, func() { _ = cluster.Stop() })
		url = cluster.URL("postgres")
	}
	env.URL = url
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 20
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	env.Pool = pool
	env.closers = append(env.closers, pool.Close)
	if _, err := migrations.Up(ctx, pool); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}

	if realFCMConfigured() && !opts.ForceEmbedded {
		log.Info("using real fcm with application default credentials")
		if env.FCM, err = herald.NewFCM(ctx, os.Getenv("FIREBASE_PROJECT_ID")); err != nil {
			return nil, fmt.Errorf("fcm client: %w", err)
		}
		return env, nil
	}
	fake, err := fakefcm.Start(opts.FakeFCM)
	if err != nil {
		return nil, fmt.Errorf("start fake fcm: %w", err)
	}
	env.Fake = fake
	env.closers = append(env.closers, fake.Close)
	if env.FCM, err = herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...); err != nil {
		return nil, fmt.Errorf("fake fcm client: %w", err)
	}
	return env, nil
}

// Close releases everything, newest first.
func (e *environment) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
}
