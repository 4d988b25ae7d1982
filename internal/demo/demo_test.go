package demo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
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

// TestDemoServesTheConsoleUntilInterrupted: `herald demo -console` serves
// the operator console over the demo's data, leaves a failed delivery and
// a dead letter to mend, and stops cleanly when interrupted.
func TestDemoServesTheConsoleUntilInterrupted(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("HERALD_FCM", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runCtx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	var stdout, stderr lockedBuffer
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, []string{"-console", "127.0.0.1:0"}, &stdout, &stderr) }()

	ready := regexp.MustCompile(`open (http://\S+/) \(Ctrl-C to stop\)`)
	var base string
	for base == "" {
		select {
		case err := <-done:
			t.Fatalf("herald demo -console returned early: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if m := ready.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
		}
	}
	page := func(path string) string {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		return string(b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(page(""), `id="count-failed"><span class="n">1<`) || !strings.Contains(page("deadletters"), `id="replay-`) {
		if time.Now().After(deadline) {
			t.Fatalf("the console never showed the failed delivery and the dead letter:\n%s", page(""))
		}
		time.Sleep(50 * time.Millisecond)
	}
	interrupt()
	if err := <-done; err != nil {
		t.Fatalf("herald demo -console, interrupted: %v\nstderr:\n%s", err, stderr.String())
	}
}

// lockedBuffer is a bytes.Buffer that the demo writes while the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
