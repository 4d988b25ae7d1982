package opscli_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/opscli"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// TestOperatorCommandsListAndMendWhatASendingProcessLeft: on the database a
// sending Herald runs against, `herald deliveries` and `herald deadletters`
// (which build no FCM client and act only through Herald's operator
// methods) list a failed push by its token's hash, list any other status,
// refuse a status that does not exist, retry the failure so that it is
// sent, and replay a dead letter.
func TestOperatorCommandsListAndMendWhatASendingProcessLeft(t *testing.T) {
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

	require.NoError(t, h.Tokens().Register(ctx, "author", "author-phone", notification.PlatformAndroid))
	require.NoError(t, h.Tokens().Register(ctx, "author", "author-tablet", notification.PlatformIOS))
	fake.FailToken("author-phone", testutil.Fault{Code: testutil.FaultInvalidMessage})
	// An event no rule knows: the relay dead-letters it.
	_, err = pool.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		VALUES ('unknown-event', '{"v":1,"events":[{"type":"order_shipped","data":{},"notifications":[]}]}', '{}', pg_current_xact_id())`)
	require.NoError(t, err)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = h.Raise(ctx, tx, notification.CommentCreated{CourseID: "c1", CourseTitle: "Go", CommentID: "m1",
		CommenterID: "ann", CommenterName: "Ann", CourseAuthorID: "author"})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); assert.NoError(t, h.Run(runCtx)) }()
	t.Cleanup(func() { stop(); wg.Wait() })
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		counts, err := h.CountDeliveries(ctx)
		assert.NoError(c, err)
		assert.Equal(c, map[notification.DeliveryStatus]int{notification.StatusFailed: 1, notification.StatusSent: 1}, counts)
		dls, err := h.DeadLetters(ctx, true, 10)
		assert.NoError(c, err)
		assert.Len(c, dls, 1)
	}, 20*time.Second, 50*time.Millisecond)

	out, err := runCommand(ctx, opscli.Deliveries, "list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	assert.Regexp(t, `^ID\s+NOTIFICATION\s+RECIPIENT\s+TOKEN\s+STATUS\s+ATTEMPTS\s+CODE\s+UPDATED\s+LAST ERROR$`, lines[0])
	assert.Contains(t, lines[1], herald.TokenHash("author-phone"))
	assert.Contains(t, lines[1], " failed ")
	assert.NotContains(t, out, "author-phone", "tokens are shown only as their hash")

	out, err = runCommand(ctx, opscli.Deliveries, "list", "-status", "sent", "-limit", "5")
	require.NoError(t, err)
	assert.Contains(t, out, herald.TokenHash("author-tablet"))
	assert.Contains(t, out, " sent ")
	assert.NotContains(t, out, herald.TokenHash("author-phone"))

	_, err = runCommand(ctx, opscli.Deliveries, "list", "-status", "faild")
	assert.ErrorContains(t, err, `unknown status "faild"`)

	out, err = runCommand(ctx, opscli.DeadLetters, "list")
	require.NoError(t, err)
	assert.Contains(t, out, "unknown-event")
	assert.Contains(t, out, "REPLAYED")

	_, err = runCommand(ctx, opscli.Deliveries, "retry")
	assert.True(t, errors.As(err, new(cli.UsageError)), "retry without -all or ids: %v", err)
	_, err = runCommand(ctx, opscli.DeadLetters, "replay", "-all", "7")
	assert.True(t, errors.As(err, new(cli.UsageError)), "replay with both -all and ids: %v", err)

	fake.ClearFaults()
	out, err = runCommand(ctx, opscli.Deliveries, "retry", "-all")
	require.NoError(t, err)
	assert.Equal(t, "1 failed deliveries made pending again\n", out)
	require.Eventually(t, func() bool { return len(fake.AcceptedFor("author-phone")) == 1 }, 20*time.Second, 50*time.Millisecond)

	out, err = runCommand(ctx, opscli.DeadLetters, "replay", "-all")
	require.NoError(t, err)
	assert.Equal(t, "1 dead letters replayed onto the outbox\n", out)
}

// runCommand runs one operator command and returns its standard output.
// commandsDatabase is a new migrated database, the one the commands run
// against (DATABASE_URL, for this test), and a pool on it.
func commandsDatabase(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := testutil.NewDatabase(t)
	t.Setenv("DATABASE_URL", url)
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func runCommand(ctx context.Context, cmd cli.Command, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	err := cmd(ctx, args, &stdout, &stderr)
	if err != nil {
		err = fmt.Errorf("stderr %q: %w", stderr.String(), err)
	}
	return stdout.String(), err
}
