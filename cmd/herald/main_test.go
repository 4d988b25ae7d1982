package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/herald-push/herald/internal/cli"
)

// The help text lists every command a user can run, in order, and neither
// child process.
func TestHelpListsCommandsButNotChildren(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"help"}, &stdout, &stderr); err != nil {
		t.Fatalf("herald help: %v", err)
	}
	help := stderr.String()
	last := -1
	for _, name := range []string{"demo", "migrate", "bench", "chaos", "status", "deliveries", "deadletters"} {
		at := strings.Index(help, "  "+name+" ")
		if at < 0 {
			t.Errorf("help does not list %s:\n%s", name, help)
			continue
		}
		if at < last {
			t.Errorf("help lists %s out of order:\n%s", name, help)
		}
		last = at
	}
	for _, hidden := range []string{"bench-fake-fcm", "bench-herald", "chaos-worker"} {
		if strings.Contains(help, hidden) {
			t.Errorf("help lists the internal %s:\n%s", hidden, help)
		}
	}
}

func TestNoOrUnknownCommandIsAUsageError(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"nosuch"}, {"Demo"}, {""}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		var usage cli.UsageError
		if !errors.As(err, &usage) {
			t.Errorf("herald %q: got %v, want a usage error", args, err)
		}
		if !strings.Contains(stderr.String(), "usage: herald") {
			t.Errorf("herald %q printed no usage", args)
		}
	}
}

// Each command reaches its own package: shown by an answer only that
// package gives.
func TestCommandsReachTheirPackages(t *testing.T) {
	t.Setenv("HERALD_CHAOS_WORKER", "") // a worker started by hand refuses
	t.Setenv("HERALD_BENCH_HERALD", "") // so does a bench's herald process
	t.Setenv("DATABASE_URL", "")        // operator commands never start a database
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"chaos-worker"}, "started by `herald chaos`"},
		{[]string{"bench-herald"}, "started by `herald bench replicas`"},
		{[]string{"status"}, "DATABASE_URL is not set"},
		{[]string{"deliveries", "list"}, "DATABASE_URL is not set"},
		{[]string{"deliveries", "timeline", "01a22ad7-345e-72e5-83de-7a6d653fd160"}, "DATABASE_URL is not set"},
		{[]string{"deadletters", "list"}, "DATABASE_URL is not set"},
		{[]string{"migrate"}, "DATABASE_URL is not set"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tc.args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("herald %s: got %v, want an error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	for _, name := range []string{"demo", "bench", "chaos"} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{name, "-no-such-flag"}, &stdout, &stderr)
		if !errors.As(err, new(cli.UsageError)) || !strings.Contains(stderr.String(), "-no-such-flag") {
			t.Errorf("herald %s -no-such-flag: got %v, stderr %q; want its flag set's usage error", name, err, stderr.String())
		}
	}
}
