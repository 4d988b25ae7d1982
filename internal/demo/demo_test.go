package demo

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/cli"
)

// TestDemo runs `herald demo` on the embedded default, a throwaway Postgres
// and the fake FCM, and checks its accounting: nothing lost, nothing sent
// twice, nothing sent for a rolled-back comment.
func TestDemo(t *testing.T) {
	// The embedded default, whatever the environment says.
	t.Setenv("DATABASE_URL", "")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("HERALD_FCM", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var stdout, stderr bytes.Buffer
	start := time.Now()
	err := Run(ctx, nil, &stdout, &stderr)
	t.Logf("herald demo took %s", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("herald demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		`(?m)^summary$`,
		`pushes accepted by FCM\s+[1-9]\d*\b.*\bduplicates 0\s+lost 0\n`,
		`pushes for rolled-back comments 0\n`,
		`notifications created\s+\d+\s+\(for rolled-back comments 0; their comment rows 0\)`,
		`dead tokens pruned\s+1 \(alice-old-tablet\)`,
		`result\s+ok:`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("stdout does not match %s", want)
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out, stderr.String())
	}
}

func TestDemoRejectsArguments(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"extra"}, &stdout, &stderr)
	var usage cli.UsageError
	if !errors.As(err, &usage) {
		t.Fatalf("herald demo extra: got %v, want a usage error", err)
	}
}
