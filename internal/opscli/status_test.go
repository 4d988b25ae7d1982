package opscli_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/opscli"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// TestHeraldStatusAndTheTimelineAnswerTheOnCallQuestions: on the database
// a sending Herald runs against, `herald status` (a process that does not
// send) shows at a glance the deliveries by status, what is due, the
// relay's backlog, the last hour's failures by FCM code and the dead
// letters; -json is the same as JSON with readable durations; -watch
// redraws in place until interrupted. `herald deliveries list -recipient`
// finds a user's deliveries whatever their status, `timeline` shows each
// attempt with its code, `retry -code` retries by filter and `cancel`
// stops a notification's pushes not yet made.
func TestHeraldStatusAndTheTimelineAnswerTheOnCallQuestions(t *testing.T) {
	ctx := context.Background()
	pool := commandsDatabase(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	fcm, err := herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	h, err := herald.New(pool, fcm, rules, herald.Config{
		Logger: slog.New(slog.DiscardHandler),
		Sender: herald.SenderConfig{PollInterval: 50 * time.Millisecond},
	})
	require.NoError(t, err)
	require.NoError(t, h.Tokens().Register(ctx, "alice", "alice-phone", notification.PlatformAndroid))
	require.NoError(t, h.Tokens().Register(ctx, "alice", "alice-old", notification.PlatformAndroid))
	fake.FailToken("alice-phone", testutil.Fault{Code: testutil.FaultInvalidMessage})
	fake.FailToken("alice-old", testutil.Fault{Code: testutil.FaultUnregistered})
	raise := func(id string) *notification.Notification {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		ns, err := h.Raise(ctx, tx, notification.CommentCreated{CourseID: "c1", CourseTitle: "Go", CommentID: id,
			CommenterID: "ann", CommenterName: "Ann", CourseAuthorID: "alice"})
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		return ns[0]
	}
	n := raise("m1")
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); assert.NoError(t, h.Run(runCtx)) }()
	t.Cleanup(func() { stop(); wg.Wait() })
	testutil.WaitIdle(t, pool, 20*time.Second)

	out, err := runCommand(ctx, opscli.Status)
	require.NoError(t, err)
	t.Logf("herald status:\n%s", out)
	assert.Regexp(t, `(?m)^Deliveries\s+token_pruned 1  failed 1$`, out)
	assert.Regexp(t, `(?m)^Senders\s+0 open, 0 due now$`, out)
	assert.Regexp(t, `(?m)^Relay\s+0 outbox messages waiting$`, out)
	assert.Regexp(t, `(?m)^Failed, last hour\s+(INVALID_ARGUMENT 1  UNREGISTERED 1)$`, out)
	assert.Regexp(t, `(?m)^Dead letters\s+none$`, out)
	assert.Regexp(t, `(?m)^Breaker\s+\(each sending process has its own; this one does not send\)$`, out)
	assert.Regexp(t, `(?m)^Instances \(1\)\s+\S+ pid \d+ \S+, leader, up \S+, heartbeat \S+ ago$`, out,
		"the sending Herald, the only one, leads")
	assert.NotContains(t, out, "alice-phone")

	out, err = runCommand(ctx, opscli.Status, "-json")
	require.NoError(t, err)
	var j map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &j))
	assert.Equal(t, "0s", j["oldest_due_age"])
	assert.Equal(t, "0s", j["relay"].(map[string]any)["lag"])
	assert.Len(t, j["failed_last_hour"], 2)

	watchCtx, cancelWatch := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancelWatch()
	out, err = runCommand(watchCtx, opscli.Status, "-watch", "-interval", "100ms")
	require.NoError(t, err, "an interrupted -watch ends without an error")
	assert.GreaterOrEqual(t, strings.Count(out, "\033[H\033[2J"), 2, "redrawn in place")
	assert.Contains(t, out, "refreshing every 100ms")

	_, err = runCommand(ctx, opscli.Status, "-interval", "0s")
	assert.Error(t, err)

	// Why did Alice get nothing? Her deliveries, whatever their status.
	out, err = runCommand(ctx, opscli.Deliveries, "list", "-recipient", "alice")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Contains(t, out, " token_pruned ")
	assert.Contains(t, out, " failed ")
	out, err = runCommand(ctx, opscli.Deliveries, "list", "-code", "UNREGISTERED", "-since", "1h")
	require.NoError(t, err)
	require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 2, out)
	assert.Contains(t, out, herald.TokenHash("alice-old"))
	_, err = runCommand(ctx, opscli.Deliveries, "list", "-since", "yesterday")
	assert.ErrorContains(t, err, "neither a duration")

	out, err = runCommand(ctx, opscli.Deliveries, "timeline", n.ID().String())
	require.NoError(t, err)
	t.Logf("herald deliveries timeline:\n%s", out)
	assert.Regexp(t, `(?m)^Notification\s+`+n.ID().String()+` comment_created to alice`, out)
	assert.Regexp(t, `(?m)^Deliveries\s+token_pruned 1  failed 1$`, out)
	assert.Regexp(t, `(?m)^\s+attempt 1\s+failed\s+INVALID_ARGUMENT\s`, out)
	assert.Regexp(t, `(?m)^\s+attempt 1\s+token_pruned\s+UNREGISTERED\s`, out)
	assert.NotContains(t, out, "alice-phone")

	fake.ClearFaults()
	out, err = runCommand(ctx, opscli.Deliveries, "retry", "-code", "INVALID_ARGUMENT")
	require.NoError(t, err)
	assert.Equal(t, "1 failed deliveries made pending again\n", out)
	require.Eventually(t, func() bool { return len(fake.AcceptedFor("alice-phone")) == 1 }, 20*time.Second, 50*time.Millisecond)
	_, err = runCommand(ctx, opscli.Deliveries, "retry", "-code", "INVALID_ARGUMENT", "7")
	assert.Error(t, err, "filters and ids together are refused")

	// A notification cancelled before its relay expands it: nothing is sent.
	stop()
	wg.Wait()
	m := raise("m2")
	out, err = runCommand(ctx, opscli.Deliveries, "cancel", m.ID().String())
	require.NoError(t, err)
	assert.Equal(t, "0 deliveries cancelled; notification "+m.ID().String()+" gets no more pushes\n", out)
	_, err = runCommand(ctx, opscli.Deliveries, "cancel", "not-an-id")
	assert.Error(t, err)
	runCtx, stop = context.WithCancel(ctx)
	defer stop()
	wg.Add(1)
	go func() { defer wg.Done(); assert.NoError(t, h.Run(runCtx)) }()
	testutil.WaitIdle(t, pool, 20*time.Second)
	out, err = runCommand(ctx, opscli.Deliveries, "timeline", m.ID().String())
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^Cancelled\s+`, out)
	assert.Regexp(t, `(?m)^Deliveries\s+none$`, out)
	assert.Len(t, fake.AcceptedFor("alice-phone"), 1, "the cancelled notification was not pushed")
}

// TestStatusWatchOutlivesAnUnreachableDatabase: `herald status -watch`
// left running through a database restart says in place that the status
// is unavailable and keeps trying, instead of exiting; without -watch the
// error is the command's.
func TestStatusWatchOutlivesAnUnreachableDatabase(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	ctx := context.Background()
	_, err := runCommand(ctx, opscli.Status)
	assert.Error(t, err)

	watchCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	out, err := runCommand(watchCtx, opscli.Status, "-watch", "-interval", "100ms")
	require.NoError(t, err)
	assert.GreaterOrEqual(t, strings.Count(out, "status unavailable at "), 2, out)
}
