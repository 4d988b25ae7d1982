package herald

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/internal/backoff"
	"github.com/herald-push/herald/internal/settings"
)

// PoolerMode says whether Herald's pool reaches Postgres through a pooler in
// transaction mode (PgBouncer's pool_mode = transaction, the mode most teams
// run), where a connection has no session of its own.
type PoolerMode string

const (
	// PoolerDetect (the default) lets Run find out at start, with a few
	// statements on two connections of the pool (see Run).
	PoolerDetect PoolerMode = "detect"
	// PoolerNone declares that every connection of the pool keeps its
	// Postgres session: connected directly, or through a pooler in session
	// mode. Run probes nothing and LISTENs on a connection of the pool.
	PoolerNone PoolerMode = "none"
	// PoolerTransaction declares a pooler in transaction mode.
	PoolerTransaction PoolerMode = "transaction"
)

// PoolerConfig tells Herald how its pool reaches Postgres. Herald needs no
// session of its own for its work (every lock it takes and every setting it
// makes ends with its transaction); only the wake-up of senders on new
// deliveries (LISTEN) needs one session that lasts. See the README's
// "Behind a connection pooler".
type PoolerConfig struct {
	// Mode declares whether the pool goes through a pooler in transaction
	// mode. Defaults to PoolerDetect.
	Mode PoolerMode
	// ListenURL is a connection string for a direct session to Postgres
	// (bypassing a transaction pooler), used only to LISTEN for new
	// deliveries: one connection per running Herald. When empty and the
	// pool is behind a transaction pooler, the sender and the broadcast
	// expander look for new deliveries every PollInterval instead (Run
	// logs a WARN saying so). Unset by default.
	ListenURL string
	// PollInterval is how often the sender and broadcast expander look for
	// new deliveries behind a transaction pooler without ListenURL.
	// Defaults to 100ms.
	PollInterval time.Duration
}

// ErrPoolerPreparedStatements is matched (errors.Is) by Run's error when the
// pool reaches Postgres through a transaction pooler that does not keep
// prepared statements while pgx prepares them (QueryExecModeCacheStatement,
// pgx's default) or reuses a described statement in a later round trip
// (QueryExecModeDescribeExec): such a pool fails at random with "prepared
// statement ... does not exist" or "... already exists". It is matched too
// by Raise's error when one of those errors happens there. Get the details
// with errors.As a *PoolerError.
var ErrPoolerPreparedStatements = errors.New("herald: the pool's prepared statements do not survive its transaction pooler")

// PoolerError is the error behind ErrPoolerPreparedStatements.
type PoolerError struct {
	// ExecMode is the pool's pgx default query exec mode.
	ExecMode pgx.QueryExecMode
	// Seen says how Herald knows: "probed" (Run saw a prepared statement
	// vanish, or the pool uses describe exec behind a pooler Run detected
	// or Config.Pooler.Mode declared) or "query" (a statement failed so).
	Seen string
	// Err is the database error, if one was seen.
	Err error
}

func (e *PoolerError) Error() string {
	msg := fmt.Sprintf("herald: the pool goes through a transaction pooler that does not keep prepared statements, "+
		"and pgx uses them (exec mode %q, %s): configure the pgx pool with "+
		"ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe (default_query_exec_mode=cache_describe in the URL), "+
		"or enable prepared statements in the pooler (PgBouncer 1.21 or later: max_prepared_statements)", e.ExecMode, e.Seen)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is makes errors.Is(err, ErrPoolerPreparedStatements) true.
func (e *PoolerError) Is(target error) bool { return target == ErrPoolerPreparedStatements }

// Unwrap returns the database error, if any.
func (e *PoolerError) Unwrap() error { return e.Err }

// ErrUnsupportedExecMode is returned by New for a pool whose pgx default
// query exec mode is QueryExecModeExec or QueryExecModeSimpleProtocol: they
// guess each argument's Postgres type from its Go type, so a uuid.UUID
// cannot be encoded and a []byte for a json column (watermill-sql's
// payload) is sent as bytea. Use QueryExecModeCacheStatement (pgx's
// default) directly or through a pooler that keeps prepared statements, or
// QueryExecModeCacheDescribe, which works through any pooler.
var ErrUnsupportedExecMode = errors.New("herald: the pool's pgx exec mode guesses argument types from Go types, " +
	"which Herald's and watermill-sql's arguments do not survive: use pgx.QueryExecModeCacheStatement (the default) " +
	"or, behind a transaction pooler, pgx.QueryExecModeCacheDescribe (default_query_exec_mode=cache_describe)")

// checkExecMode refuses an exec mode that cannot encode Herald's arguments.
func checkExecMode(mode pgx.QueryExecMode) error {
	if mode == pgx.QueryExecModeExec || mode == pgx.QueryExecModeSimpleProtocol {
		return fmt.Errorf("%w (the pool uses %q)", ErrUnsupportedExecMode, mode)
	}
	return nil
}

func (c PoolerConfig) withDefaults() PoolerConfig {
	if c.Mode == "" {
		c.Mode = PoolerDetect
	}
	settings.Default(&c.PollInterval, 100*time.Millisecond)
	return c
}

func (c PoolerConfig) validate() error {
	var errs []error
	switch c.Mode {
	case "", PoolerDetect, PoolerNone, PoolerTransaction:
	default:
		errs = append(errs, fmt.Errorf("Mode %q is not detect, none or transaction", c.Mode))
	}
	if c.ListenURL != "" {
		if _, err := pgx.ParseConfig(c.ListenURL); err != nil {
			errs = append(errs, errors.New("ListenURL is not a valid Postgres connection string"))
		}
	}
	errs = append(errs, settings.NotNegative("PollInterval", c.PollInterval))
	return errors.Join(errs...)
}

// explainPooler turns a prepared statement missing from (or already on) the
// session that served it into a *PoolerError.
func (h *Herald) explainPooler(err error) error {
	if !adapters.IsPreparedStatementLost(err) {
		return err
	}
	return &PoolerError{ExecMode: h.pool.Config().ConnConfig.DefaultQueryExecMode, Seen: "query", Err: err}
}

// deliverySignals decides, at Run's start, how this Herald learns of new
// deliveries, and refuses a pool whose prepared statements the pooler would
// lose (a *PoolerError). It waits out an unreachable database as Run does;
// ok is false if ctx ended first.
func (h *Herald) deliverySignals(ctx context.Context) (signals adapters.DeliverySignals, ok bool, err error) {
	cfg := h.pooler
	probe := adapters.PoolerProbe{}
	if cfg.Mode != PoolerNone {
		probe, ok = h.probePooler(ctx)
		if !ok {
			return signals, false, nil
		}
	}
	pooled := cfg.Mode == PoolerTransaction || probe.TransactionPooling
	execMode := h.pool.Config().ConnConfig.DefaultQueryExecMode
	switch {
	case cfg.Mode == PoolerDetect && probe.TransactionPooling:
		h.log.Info("the pool goes through a pooler in transaction mode: herald uses no session state", "exec_mode", execMode.String())
	case cfg.Mode == PoolerDetect && !probe.Known:
		h.log.Info("could not tell whether the pool goes through a transaction pooler (it lent no second connection): assuming not; set Pooler.Mode to say")
	}
	if pooled && (probe.PreparedStatementsLost || execMode == pgx.QueryExecModeDescribeExec) {
		return signals, false, &PoolerError{ExecMode: execMode, Seen: "probed"}
	}
	if pooled && adapters.NeedsSessionStatements(execMode) {
		h.log.Warn("behind a transaction pooler, the pool uses pgx's prepared statements and Run's probe did not see them lost "+
			"(a pooler that keeps them, such as PgBouncer 1.21+ with max_prepared_statements?); "+
			"if queries fail with \"prepared statement ... does not exist\", use pgx.QueryExecModeExec",
			"exec_mode", execMode.String(), "observed", probe.TransactionPooling)
	}
	// Each LISTEN is checked with a NOTIFY sent through the pool: one the
	// probe took for direct, or a ListenURL that goes through the pooler
	// too, turns to polling and says so.
	signals.PollInterval, signals.Check = cfg.PollInterval, h.pool
	switch {
	case cfg.ListenURL != "":
		signals.ListenURL = cfg.ListenURL
	case !pooled:
		signals.Pool = h.pool
	}
	return signals, true, nil
}

// probePooler runs adapters.ProbePooler until it answers, waiting out an
// unreachable database with backoff (logged once at WARN), and reports
// false if ctx ended first.
func (h *Herald) probePooler(ctx context.Context) (adapters.PoolerProbe, bool) {
	retry := backoff.New(100*time.Millisecond, schemaRetry)
	logged := false
	for {
		probe, err := adapters.ProbePooler(ctx, h.pool)
		if err == nil {
			return probe, true
		}
		if ctx.Err() != nil {
			return probe, false
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			// The server (or the pooler) answered: say so and carry on as
			// declared rather than refuse to run.
			h.log.Error("could not probe the pool for a transaction pooler; assuming none unless Pooler.Mode says so", "err", err)
			return adapters.PoolerProbe{}, true
		}
		if !logged {
			logged = true
			h.log.Warn("herald cannot reach the database yet; retrying", "err", err)
		}
		if !backoff.Sleep(ctx, retry.Next()) {
			return probe, false
		}
	}
}
