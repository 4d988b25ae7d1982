// Package cli is what every herald subcommand shares with the main that
// dispatches to it: the usage error main exits 2 on without a message (the
// subcommand's flag set has already explained), a writer several goroutines
// can print progress to, and the interruptible wait the harnesses pace
// themselves with.
package cli

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

	"github.com/herald-push/herald/internal/backoff"
)

// UsageError is a mistake on the command line. main exits 2 and prints
// nothing more: the flag set, or the command's usage text, already did.
type UsageError struct{ Msg string }

// Error returns the message.
func (e UsageError) Error() string { return e.Msg }

// Sleep waits d or until ctx ends (the command was interrupted), and reports
// whether the full wait passed. It is backoff.Sleep, named here for the
// subcommands that pace themselves with it.
func Sleep(ctx context.Context, d time.Duration) bool { return backoff.Sleep(ctx, d) }

// LockedWriter serialises writes from several goroutines (logs, progress
// lines, child processes' output) to W.
type LockedWriter struct {
	mu sync.Mutex
	W  io.Writer
}

// Write writes p to W, one caller at a time.
func (w *LockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.W.Write(p)
}

// Command is a subcommand: it gets its arguments (after its name), writes its
// report to stdout and its progress to stderr, and stops when ctx ends.
type Command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// Main runs cmd as the whole process until it returns or SIGINT or SIGTERM
// ends its context, and returns the exit code: 0, or 2 after an error,
// which it prints to stderr as "name: error" unless it is a UsageError.
func Main(name string, cmd Command, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd(ctx, args, os.Stdout, os.Stderr)
	if err == nil {
		return 0
	}
	var usage UsageError
	if !errors.As(err, &usage) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	}
	return 2
}
