package adapters

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PoolerProbe is what ProbePooler learned about a pool's connections.
type PoolerProbe struct {
	// Known is true when the probe could tell: it needs two connections of
	// the pool at once.
	Known bool
	// TransactionPooling is true when a connection of the pool does not
	// keep one Postgres session: a pooler in transaction mode (PgBouncer's
	// pool_mode = transaction) hands each transaction, or each statement
	// outside one, to any server session. Then LISTEN, session advisory
	// locks and session settings do not last.
	TransactionPooling bool
	// PreparedStatementsLost is true when a named prepared statement made
	// on a connection was gone at its next use, as with PgBouncer before
	// 1.21 (or without max_prepared_statements). Only probed when the pool
	// prepares named statements (pgx's QueryExecModeCacheStatement).
	PreparedStatementsLost bool
}

// NeedsSessionStatements reports whether pgx in mode relies on statements
// that outlive a round trip in one session: QueryExecModeCacheStatement
// prepares named statements, QueryExecModeDescribeExec executes the unnamed
// statement it described in a previous round trip. A transaction pooler that
// does not track prepared statements breaks both.
func NeedsSessionStatements(mode pgx.QueryExecMode) bool {
	return mode == pgx.QueryExecModeCacheStatement || mode == pgx.QueryExecModeDescribeExec
}

// poolerProbeWait bounds how long ProbePooler waits for its second
// connection; a pool busy for that long leaves the answer unknown.
const poolerProbeWait = 5 * time.Second

// ProbePooler finds out whether pool's connections keep their Postgres
// session, with a few statements in the simple protocol (which any pooler
// passes): connection A asks for its backend's pid; at once connection B
// opens a transaction and asks for its own; A asks again. Directly
// connected, or through a pooler in session mode, A keeps its backend and B
// gets another. Through a pooler in transaction mode, B takes the server
// session A just released (PgBouncer hands out the one released last), or
// A comes back on another one, then or once B's transaction ends. A change
// seen is conclusive; none seen in 32 rounds means none. One round alone
// misses often when other clients keep the pooler busy: they take the
// session A released before B asks, and hand it back before A asks again
// (measured through PgBouncer with two to six other clients: 12-47% of
// rounds saw no change; 5 rounds missed in 1-3.5% of probes). When the pool prepares named
// statements, A's pid is asked through one, which tells whether the pooler
// keeps them. A pool of one connection, or one too busy to lend a second
// within 5s, gives Known false and no error.
func ProbePooler(ctx context.Context, pool *pgxpool.Pool) (PoolerProbe, error) {
	if pool.Config().MaxConns < 2 {
		return PoolerProbe{}, nil
	}
	a, err := pool.Acquire(ctx)
	if err != nil {
		return PoolerProbe{}, err
	}
	defer a.Release()
	ac := a.Conn().PgConn()
	pidOfA := simplePID
	if pool.Config().ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement {
		tag := make([]byte, 6)
		_, _ = rand.Read(tag) // never fails
		name := "herald_pooler_probe_" + hex.EncodeToString(tag)
		if _, err := ac.Prepare(ctx, name, `SELECT pg_backend_pid()`, nil); err != nil {
			return PoolerProbe{}, fmt.Errorf("probe pooler: %w", err)
		}
		// Directly connected this drops it; through a pooler it reaches
		// whichever session is lent, which may not hold it (harmless).
		defer func() { _ = ac.Deallocate(context.WithoutCancel(ctx), name) }()
		pidOfA = func(ctx context.Context, c *pgconn.PgConn) (int, error) {
			res := c.ExecPrepared(ctx, name, nil, nil, nil).Read()
			if res.Err != nil {
				return 0, res.Err
			}
			return parsePID(res.Rows)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, poolerProbeWait)
	b, err := pool.Acquire(waitCtx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return PoolerProbe{}, ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return PoolerProbe{}, nil // the pool is busy: cannot tell
		}
		return PoolerProbe{}, err
	}
	defer b.Release()
	bc := b.Conn().PgConn()
	// One round can miss (another client of the pooler may take the
	// session A released before B asks); no round can see a change
	// directly connected. So a change seen once is conclusive, and a few
	// rounds make missing it unlikely.
	for range poolerProbeRounds {
		pooled, err := probeRound(ctx, ac, bc, pidOfA)
		if isStatementLost(err) {
			return PoolerProbe{Known: true, TransactionPooling: true, PreparedStatementsLost: true}, nil
		}
		if err != nil {
			return PoolerProbe{}, fmt.Errorf("probe pooler: %w", err)
		}
		if pooled {
			return PoolerProbe{Known: true, TransactionPooling: true}, nil
		}
	}
	return PoolerProbe{Known: true}, nil
}

// poolerProbeRounds is how many times ProbePooler looks for a session that
// changed before it concludes there is none.
const poolerProbeRounds = 32

// probeRound asks for a's backend, then at once opens a transaction on b
// (through a transaction pooler it takes the session a just released: the
// one released last), asks for b's backend and a's again, ends b's
// transaction and asks for a's once more (a transaction pooler hands a the
// session b just released), and reports whether the two connections shared
// a backend or a changed its own.
func probeRound(ctx context.Context, a, b *pgconn.PgConn, pidOfA func(context.Context, *pgconn.PgConn) (int, error)) (bool, error) {
	first, err := pidOfA(ctx, a)
	if err != nil {
		return false, err
	}
	if _, err := b.Exec(ctx, `BEGIN`).ReadAll(); err != nil {
		return false, fmt.Errorf("herald needs transactions (statement pooling is not supported): %w", err)
	}
	held, err := simplePID(ctx, b)
	var again int
	if err == nil {
		again, err = pidOfA(ctx, a)
	}
	if _, rollbackErr := b.Exec(context.WithoutCancel(ctx), `ROLLBACK`).ReadAll(); rollbackErr != nil {
		err = errors.Join(err, rollbackErr)
	}
	if err != nil {
		return false, err
	}
	if held == first || again != first {
		return true, nil
	}
	last, err := pidOfA(ctx, a)
	return last != first, err
}

// isStatementLost reports whether err says a prepared statement is missing
// (invalid_sql_statement_name) or already exists on the session lent
// (duplicate_prepared_statement): what a pooler that does not track
// prepared statements causes.
func isStatementLost(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "26000" || pgErr.Code == "42P05")
}

// IsPreparedStatementLost reports whether err is a prepared statement
// missing from, or already on, the Postgres session that served it: the mark
// of a pool with named prepared statements behind a transaction pooler.
func IsPreparedStatementLost(err error) bool { return isStatementLost(err) }

func simplePID(ctx context.Context, c *pgconn.PgConn) (int, error) {
	results, err := c.Exec(ctx, `SELECT pg_backend_pid()`).ReadAll()
	if err != nil {
		return 0, err
	}
	if len(results) != 1 {
		return 0, fmt.Errorf("pg_backend_pid: %d results", len(results))
	}
	return parsePID(results[0].Rows)
}

func parsePID(rows [][][]byte) (int, error) {
	if len(rows) != 1 || len(rows[0]) != 1 {
		return 0, errors.New("pg_backend_pid: not one value")
	}
	return strconv.Atoi(string(rows[0][0]))
}
