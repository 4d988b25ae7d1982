package pgcluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startBouncer starts a cluster and a pgbouncer in front of it, both
// stopped when the test ends.
func startBouncer(t *testing.T) (*Cluster, *Bouncer) {
	t.Helper()
	if _, err := FindBouncer(""); err != nil {
		t.Skip(err)
	}
	c, err := Start(t.Context(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	b, err := StartBouncer(t.Context(), c, BouncerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	return c, b
}

func TestABouncerSurvivesACancelledQueryOnABackendThatListens(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c, b := startBouncer(t)
	admin, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	conn, err := pgx.Connect(ctx, b.URL("postgres")+"&default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	// A LISTEN through the pooler (a host's listener that should have gone
	// direct) leaves its server connection listening while NOTIFYs keep
	// coming; that server's queries are cancelled about when they end, so
	// that some end while pgbouncer is still forwarding the cancel request
	// and a notification comes then. PgBouncer 1.18 to 1.20 exit on that
	// ("server_proto: server in bad state: 11").
	if _, err := conn.Exec(ctx, `LISTEN herald_bouncer_test`); err != nil {
		t.Fatal(err)
	}
	notifyCtx, stopNotifying := context.WithCancel(ctx)
	notifying := make(chan struct{})
	go func() {
		defer close(notifying)
		for notifyCtx.Err() == nil {
			_, _ = admin.Exec(notifyCtx, `NOTIFY herald_bouncer_test`)
		}
	}()
	defer func() { stopNotifying(); <-notifying }()
	for round := range 150 {
		delay := time.Duration(round%20) * time.Millisecond / 2
		go func() {
			time.Sleep(delay)
			_ = conn.PgConn().CancelRequest(ctx)
		}()
		_, _ = conn.Exec(ctx, `SELECT pg_sleep(0.005)`)
		time.Sleep(15 * time.Millisecond) // the cancel request is done
		if _, exit := b.Exits(); exit != nil {
			t.Fatalf("round %d: %v", round, exit)
		}
	}
}

func TestABouncerThatDiesSaysHowAndRestartsOnItsPort(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, b := startBouncer(t)
	b.mu.Lock()
	p := b.proc
	b.mu.Unlock()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	n, exit := b.Exits()
	if n != 1 || exit == nil {
		t.Fatalf("after a kill: Exits() = %d, %v; want 1 and how", n, exit)
	}
	for _, want := range []string{"signal: killed", fmt.Sprintf("port %d", b.Port()), "end of pgbouncer log", "process up"} {
		if !strings.Contains(exit.Error(), want) {
			t.Errorf("the exit says %q, not %q", exit, want)
		}
	}

	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, b.URL("postgres"))
	if err != nil {
		t.Fatalf("through the restarted pgbouncer: %v", err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Restart(ctx); err != nil {
		t.Fatalf("Restart while it runs: %v", err)
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if n, last := b.Exits(); n != 1 || last != exit {
		t.Errorf("after a restart and Stop: Exits() = %d, %v; want the one exit", n, last)
	}
	if err := b.Restart(ctx); err == nil {
		t.Error("Restart after Stop started pgbouncer")
	}
}
