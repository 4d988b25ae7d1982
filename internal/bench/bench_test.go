package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/testutil"
)

// TestBench runs every scenario at a tiny size, with the fake FCM in its
// child process, and checks the accounting, never the timing: every
// committed push accepted once, nothing else.
func TestBench(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	err := Run(ctx, []string{"personalised", "-n", "2000", "broadcast", "-tokens", "5000",
		"latency", "-duration", "2s", "-timeout", "1m"}, &stdout, &stderr)
	t.Logf("herald bench took %s", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("herald bench: %v\nstderr:\n%s", err, stderr.String())
	}
	want := map[string]int{"personalised": 2000, "broadcast": 5000, "latency": 400}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var r benchResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("stdout line is not a bench result: %v\n%s", err, sc.Text())
		}
		deliveries, ok := want[r.Scenario]
		if !ok {
			t.Errorf("unexpected or repeated scenario %q", r.Scenario)
			continue
		}
		delete(want, r.Scenario)
		if r.Deliveries != deliveries || !r.Complete || r.Lost != 0 || r.Duplicates != 0 ||
			r.Unexpected != 0 || r.Mismatched != 0 || r.SentRecorded != deliveries {
			t.Errorf("%s: deliveries %d (want %d), complete %v, lost %d, duplicates %d, unexpected %d, mismatched %d, sent recorded %d",
				r.Scenario, r.Deliveries, deliveries, r.Complete, r.Lost, r.Duplicates, r.Unexpected, r.Mismatched, r.SentRecorded)
		}
		if r.Fake != "process" {
			t.Errorf("%s: fake ran in %q, want a child process", r.Scenario, r.Fake)
		}
		if r.Scenario == "personalised" && (r.Baseline == nil || r.Baseline.Lost != 0 || r.Ratio == nil) {
			t.Errorf("personalised: baseline %+v, ratio %v", r.Baseline, r.Ratio)
		}
	}
	if len(want) > 0 {
		t.Errorf("scenarios missing from stdout: %v\nstdout:\n%s", want, stdout.String())
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", stderr.String())
	}
}

func TestBenchRejectsBadArguments(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"nosuch"},
		{"personalised", "-n", "0"},
		{"-inflight", "-1"},
		{"replicas", "-processes", "0"},
	} {
		var stdout, stderr bytes.Buffer
		err := Run(context.Background(), args, &stdout, &stderr)
		var usage cli.UsageError
		if !errors.As(err, &usage) {
			t.Errorf("herald bench %v: got %v, want a usage error", args, err)
		}
	}
}

func TestBenchTallyCountsLostDuplicatesAndWindows(t *testing.T) {
	t.Parallel()
	var tally benchTally
	tally.reset(4)
	at := time.Now()
	accept := func(key int, data string, offset time.Duration) {
		r := testutil.Received{Token: benchToken(key), At: at.Add(offset)}
		if data != "" {
			r.Data = map[string]string{benchDataKey: data}
		}
		tally.observe(r)
	}
	accept(0, "0", 0)
	accept(1, "", 100*time.Millisecond)
	accept(1, "", 200*time.Millisecond) // duplicate
	accept(2, "3", 1500*time.Millisecond)
	tally.observe(testutil.Received{Token: "not-a-bench-token", At: at})
	s := tally.stats()
	if s.Lost != 1 || s.Duplicates != 1 || s.Mismatched != 1 || s.Unexpected != 1 || s.Distinct != 3 || s.Accepted != 5 {
		t.Errorf("stats = %+v", s)
	}
	if s.MaxPerSecond != 4 { // the first three and the unexpected one
		t.Errorf("max per second = %d, want 4", s.MaxPerSecond)
	}
	lat := tally.latency([]benchCommitSegment{{From: 0, To: 4, CommitNanos: at.Add(-10 * time.Millisecond).UnixNano()}})
	if lat.Samples != 3 || lat.P50 != 110 || lat.Max != 1510 {
		t.Errorf("latency = %+v", lat)
	}
}

// TestBenchReplicasSharesOneBacklogAmongProcessesAndLosesNothing runs `herald bench replicas` and `relay` at a tiny size,
// with three Herald processes (children of the test binary), and checks the
// accounting, never the timing: the backlog sent once by one process and
// once by the fleet, every process doing a part of it, each push accepted
// once; the relay expanding every event into its devices' deliveries.
func TestBenchReplicasSharesOneBacklogAmongProcessesAndLosesNothing(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	const n, processes = 6000, 3
	start := time.Now()
	err := Run(ctx, []string{"replicas", "relay", "-n", "6000", "-processes", "3"}, &stdout, &stderr)
	t.Logf("herald bench replicas relay took %s", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("herald bench: %v\nstderr:\n%s", err, stderr.String())
	}
	dec := json.NewDecoder(&stdout)
	var rep replicasResult
	var rel relayResult
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("first line: %v", err)
	}
	if err := dec.Decode(&rel); err != nil {
		t.Fatalf("second line: %v", err)
	}
	if rep.Scenario != "replicas" || rep.Processes != processes || rep.One == nil || rep.Fleet == nil {
		t.Fatalf("replicas result = %+v", rep)
	}
	for _, ph := range []*replicasPhase{rep.One, rep.Fleet} {
		if !ph.Complete || ph.Lost != 0 || ph.Duplicates != 0 || ph.Unexpected != 0 || ph.Mismatched != 0 || ph.SentRecorded != n {
			t.Errorf("%d process(es): complete %v, lost %d, duplicates %d, unexpected %d, mismatched %d, sent recorded %d",
				ph.Processes, ph.Complete, ph.Lost, ph.Duplicates, ph.Unexpected, ph.Mismatched, ph.SentRecorded)
		}
		var sent int64
		for _, p := range ph.PerProcess {
			sent += p.Sent
			if p.CPUSeconds <= 0 {
				t.Errorf("%d process(es): pid %d has no CPU time", ph.Processes, p.PID)
			}
		}
		if len(ph.PerProcess) != ph.Processes || sent != n {
			t.Errorf("%d process(es): %d reports sending %d in all, want %d sending %d", ph.Processes, len(ph.PerProcess), sent, ph.Processes, n)
		}
		if ph.HeraldCPUPerDeliveryUs <= 0 || ph.MaxPerSecondWindow <= 0 {
			t.Errorf("%d process(es): herald cpu per delivery %.0fµs, busiest second %d", ph.Processes, ph.HeraldCPUPerDeliveryUs, ph.MaxPerSecondWindow)
		}
	}
	// Nobody starves and nobody hoards: each of the three sends at least a
	// third of its fair share (a third of the backlog), whatever the
	// machine's load; measured 0.26-0.38 each.
	t.Logf("shares of %d processes: %.2f-%.2f", processes, rep.Fleet.MinShare, rep.Fleet.MaxShare)
	if fair := 1.0 / processes; rep.Fleet.MinShare < fair/3 {
		t.Errorf("a process sent %.2f of the backlog, less than a third of its fair share %.2f: %+v",
			rep.Fleet.MinShare, fair, rep.Fleet.PerProcess)
	}
	if rel.Scenario != "relay" || len(rel.Phases) != 2 {
		t.Fatalf("relay result = %+v", rel)
	}
	for _, ph := range rel.Phases {
		if !ph.Complete || ph.Deliveries != n || ph.Events != n/ph.DevicesPerUser || ph.DeliveriesPerSecond <= 0 {
			t.Errorf("relay with %d device(s) per user: %+v", ph.DevicesPerUser, ph)
		}
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", stderr.String())
	}
}
