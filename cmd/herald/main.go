// Command herald runs Herald's demo, benchmarks and fault-injection suite,
// applies its migrations, and lets operators inspect and repair deliveries
// and dead letters.
//
// Usage:
//
//	herald demo                      the main job on the embedded default
//	herald migrate                   apply migrations to DATABASE_URL
//	herald bench [scenario] [flags]  throughput, latency and memory benchmarks
//	herald chaos [flags]             crash, outage and bad-input scenarios
//	herald deliveries list|retry     failed deliveries
//	herald deadletters list|replay   dead-lettered outbox messages
//
// Without DATABASE_URL, commands that need a database start a throwaway
// Postgres from the machine's binaries and remove it at exit. Without FCM
// credentials (GOOGLE_APPLICATION_CREDENTIALS, or HERALD_FCM=real for
// application default credentials), pushes go to an in-process fake FCM.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// command is one subcommand: it gets its arguments (after its name) and
// writes its report to stdout.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"demo":        {"run a course-and-comments scenario end to end and print a summary", runDemo},
	"migrate":     {"apply Herald's migrations to DATABASE_URL", runMigrate},
	"bench":       {"run benchmark scenarios and print one JSON object per scenario", runBench},
	"chaos":       {"run the fault-injection scenarios and print what was lost and duplicated", runChaos},
	"deliveries":  {"list or retry failed deliveries", runDeliveries},
	"deadletters": {"list or replay dead-lettered outbox messages", runDeadLetters},
}

// order lists the commands in help order.
var order = []string{"demo", "migrate", "bench", "chaos", "deliveries", "deadletters"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var usage usageError
		if !errors.As(err, &usage) {
			fmt.Fprintln(os.Stderr, "herald:", err)
		}
		os.Exit(2)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return usageError{"no command"}
		}
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		printUsage(stderr)
		return usageError{"unknown command " + args[0]}
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: herald <command> [flags]")
	fmt.Fprintln(w)
	for _, name := range order {
		fmt.Fprintf(w, "  %-12s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "environment: DATABASE_URL (default: a throwaway Postgres), GOOGLE_APPLICATION_CREDENTIALS")
	fmt.Fprintln(w, "or HERALD_FCM=real for real FCM (default: an in-process fake FCM), FIREBASE_PROJECT_ID")
}

// sleepCtx waits d or until ctx ends, and reports whether the full wait passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// lockedWriter serialises writes from several goroutines (logs, progress
// lines, child processes' output) to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
