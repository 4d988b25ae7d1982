package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/testutil"
)

// TestMain runs a chaos worker instead of the tests when the sigkill
// scenario started this test binary as one (see newChaosWorkers).
func TestMain(m *testing.M) {
	if os.Getenv(chaosWorkerEnv) == "1" {
		os.Exit(cli.Main("herald chaos-worker", RunWorker, nil))
	}
	os.Exit(testutil.Main(m))
}

// TestChaos runs every scenario of `herald chaos` in its short form, one
// after another (each has its own Postgres and fake FCM; faults are timed,
// so they do not share the machine with each other), and checks the
// accounting of its JSON line: nothing lost, nothing for rolled-back
// transactions, duplicates within the bound, and the scenario's own
// promises (the command's "ok").
func TestChaos(t *testing.T) {
	t.Setenv("DATABASE_URL", "") // chaos always runs on its own throwaway clusters
	for _, sc := range chaosScenarios {
		t.Run(sc.name, func(t *testing.T) {
			res := runChaosForTest(t, sc.name)
			for _, key := range []string{"committed_events", "expected_pushes", "received"} {
				if n, _ := res[key].(float64); n <= 0 {
					t.Errorf("%s = %v, want > 0", key, res[key])
				}
			}
			if res["lost"] != 0.0 {
				t.Errorf("lost = %v, want 0", res["lost"])
			}
			if res["pushes_for_rolled_back"] != 0.0 {
				t.Errorf("pushes_for_rolled_back = %v, want 0", res["pushes_for_rolled_back"])
			}
			if d, b := res["duplicates"].(float64), res["duplicates_bound"].(float64); d > b {
				t.Errorf("duplicates = %v, more than duplicates_bound %v", d, b)
			}
			if rb, _ := res["rolled_back_events"].(float64); rb <= 0 {
				t.Errorf("rolled_back_events = %v, want some", res["rolled_back_events"])
			}
			for _, key := range chaosFigures[sc.name] {
				if _, ok := res[key]; !ok {
					t.Errorf("%s does not report %s", sc.name, key)
				}
			}
			if res["ok"] != true {
				t.Errorf("not ok: %v", res["reason"])
			}
		})
	}
}

// chaosFigures are the figures each scenario of issue 7 must report besides
// the shared accounting: what RELIABILITY.md quotes.
var chaosFigures = map[string][]string{
	"poison": {"relay_stall_max_seconds", "register_3kb_token", "direct_3kb_token_deliveries", "crowd_sent",
		"nan_raise", "nan_notifications_written", "outbox_rows_dead_lettered"},
	"token-moves":      {"tokens_moved", "deliveries_waiting_at_move", "misdirected_pushes"},
	"credentials-blip": {"blip_seconds", "deliveries_failed"},
	"hot-device":       {"others_healthy_per_s", "others_with_hot_device_per_s", "others_share"},
	"db-down-at-start": {"postgres_down_seconds", "worker_exits"},
	"fcm-outage":       {"max_in_flight", "requests_during_outage", "breaker_open_after_ms", "requests_while_open"},
	"clock-skew":       {"processes", "clock_offset_seconds"},
	"sigkill": {"feature_scheduled_raised", "feature_collapsing_raised", "feature_superseded", "feature_pushed_early",
		"feature_lost", "feature_superseded_pushed",
		"quiet_hour_pushes", "quiet_hour_pushes_early"},
	"replicas": {"processes", "connection_cuts", "sent_unrecorded_at_kills", "takeover_max_seconds", "rate_limit_per_second",
		"busiest_second", "rate_excess"},
}

// runChaosForTest runs `herald chaos -short <name>` and returns its JSON
// line. Progress goes to stderr with -v, and into the log on failure.
func runChaosForTest(t *testing.T, name string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, progress bytes.Buffer
	var stderr io.Writer = &progress
	if testing.Verbose() {
		stderr = io.MultiWriter(&progress, os.Stderr)
	}
	began := time.Now()
	err := Run(ctx, []string{"-short", "-seed", "1", name}, &stdout, stderr)
	t.Logf("herald chaos -short %s took %s", name, time.Since(began).Round(time.Millisecond))
	defer func() {
		if t.Failed() && !testing.Verbose() {
			t.Logf("stderr:\n%s", chaosTail(progress.String(), 200))
		}
	}()
	line := strings.TrimSpace(stdout.String())
	t.Logf("%s", line)
	var res map[string]any
	if jsonErr := json.Unmarshal([]byte(line), &res); jsonErr != nil {
		t.Fatalf("stdout is not one JSON line (%v; run error: %v):\n%s", jsonErr, err, line)
	}
	if res["scenario"] != name {
		t.Errorf("scenario = %v, want %s", res["scenario"], name)
	}
	if (err == nil) != (res["ok"] == true) {
		t.Errorf("exit error %v does not match ok = %v", err, res["ok"])
	}
	return res
}

// chaosTail returns the last n lines of s.
func chaosTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestChaosRejectsUnknownScenario(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"-short", "no-such-scenario"}, &stdout, &stderr)
	if _, ok := err.(cli.UsageError); !ok {
		t.Fatalf("herald chaos no-such-scenario: got %v, want a usage error", err)
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout = %q, want nothing", stdout.String())
	}
}

func TestChaosResultJSON(t *testing.T) {
	t.Parallel()
	res := &chaosResult{Scenario: "x", Lost: 1}
	res.set("kills", 3)
	res.check(false, "lost %d", 1)
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"scenario":"x","committed_events":0,"rolled_back_events":0,"expected_pushes":0,"received":0,` +
		`"lost":1,"duplicates":0,"duplicates_bound":0,"crashes":0,"restarts":0,"seconds":0,"ok":false,` +
		`"kills":3,"reason":"lost 1"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

// A chaos process with a wrong clock is wrong everywhere: Herald's one
// clock runs ahead by ClockOffset (clock-skew relies on it).
func TestChaosClockOffsetMovesHeraldsClock(t *testing.T) {
	t.Parallel()
	tuning := defaultChaosTuning()
	tuning.ClockOffset = time.Minute
	cfg := tuning.heraldConfig(slog.New(slog.DiscardHandler))
	if cfg.Now == nil {
		t.Fatal("Config.Now is not set")
	}
	if ahead := time.Until(cfg.Now()); ahead < 59*time.Second || ahead > time.Minute {
		t.Errorf("Config.Now is %s ahead, want 1m", ahead)
	}
	if cfg := defaultChaosTuning().heraldConfig(nil); cfg.Now != nil {
		t.Error("without ClockOffset, Herald's clock is its default")
	}
}

// token-moves and hot-device count the pushes to watched devices with their
// times: every push to a watched token is kept, no other.
func TestChaosPushCounterKeepsPushesToWatchedTokens(t *testing.T) {
	t.Parallel()
	c := newChaosPushCounter()
	at := time.Now()
	c.accept(testutil.Received{Token: "before-watch", Data: map[string]string{"comment_id": "c0"}, At: at})
	c.watch("moved", "before-watch")
	c.accept(testutil.Received{Token: "moved", Data: map[string]string{"comment_id": "c1"}, At: at.Add(time.Second)})
	c.accept(testutil.Received{Token: "other", Data: map[string]string{"comment_id": "c2"}, At: at.Add(2 * time.Second)})
	got := c.pushesToWatched()
	want := []chaosTimedPush{{chaosPushKey{"c1", "moved"}, at.Add(time.Second)}}
	if len(got) != len(want) || got[0] != want[0] {
		t.Errorf("pushes to watched tokens = %v, want %v", got, want)
	}
	if c.total() != 3 {
		t.Errorf("total = %d, want 3: watching changes no count", c.total())
	}
}
