// Command herald runs Herald's demo, benchmarks and fault-injection suite,
// applies its migrations, and lets operators inspect and repair deliveries
// and dead letters.
//
// Usage:
//
//	herald demo [-console :8080]     the main job on the embedded default (and the operator console)
//	herald migrate                   apply migrations to DATABASE_URL
//	herald bench [scenario] [flags]  throughput, latency and memory benchmarks
//	herald chaos [flags]             crash, outage and bad-input scenarios
//	herald status [-json] [-watch]   the deployment at a glance, from DATABASE_URL
//	herald deliveries list|retry|timeline|cancel
//	                                 find, retry and cancel deliveries
//	herald deadletters list|replay   dead-lettered outbox messages
//
// Without DATABASE_URL, commands that need a database start a throwaway
// Postgres from the machine's binaries and remove it at exit. Without FCM
// credentials (GOOGLE_APPLICATION_CREDENTIALS, or HERALD_FCM=real for
// application default credentials), pushes go to an in-process fake FCM.
//
// Each command lives in a package under internal/; this file only
// dispatches to them.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/herald-push/herald/internal/bench"
	"github.com/herald-push/herald/internal/chaos"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/demo"
	"github.com/herald-push/herald/internal/opscli"
)

// command is one subcommand in the help text.
type command struct {
	name    string
	summary string
	run     cli.Command
}

// commands lists the subcommands in help order.
func commands() []command {
	return []command{
		{"demo", "run a course-and-comments scenario end to end and print a summary; -console :8080 also serves the operator console", demo.Run},
		{"migrate", "apply Herald's migrations to DATABASE_URL", opscli.Migrate},
		{"bench", "run benchmark scenarios and print one JSON object per scenario", bench.Run},
		{"chaos", "run the fault-injection scenarios and print what was lost and duplicated", chaos.Run},
		{"status", "the deployment at a glance: backlog, lag, failures by code (-json, -watch)", opscli.Status},
		{"deliveries", "list, retry or cancel deliveries; a notification's timeline", opscli.Deliveries},
		{"deadletters", "list or replay dead-lettered outbox messages", opscli.DeadLetters},
	}
}

func main() {
	os.Exit(cli.Main("herald", run, os.Args[1:]))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return cli.UsageError{Msg: "no command"}
		}
		return nil
	}
	// The child processes `herald bench` and `herald chaos` start from this
	// binary: hidden from the help text.
	switch args[0] {
	case bench.FakeFCMCommand:
		return bench.RunFakeFCM(ctx, args[1:], stdout, stderr)
	case bench.HeraldCommand:
		return bench.RunHerald(ctx, args[1:], stdout, stderr)
	case chaos.WorkerCommand:
		return chaos.RunWorker(ctx, args[1:], stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	printUsage(stderr)
	return cli.UsageError{Msg: "unknown command " + args[0]}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: herald <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "environment: DATABASE_URL (default: a throwaway Postgres), GOOGLE_APPLICATION_CREDENTIALS")
	fmt.Fprintln(w, "or HERALD_FCM=real for real FCM (default: an in-process fake FCM), FIREBASE_PROJECT_ID")
}
