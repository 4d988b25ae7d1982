package console_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// update rewrites the screenshot of the overview kept in the repository:
//
//	go test ./internal/console -run TestConsoleInChromium -update
var update = flag.Bool("update", false, "write docs/console-overview.png from the browser test")

// screenshotPath is the overview's screenshot, shown in the README.
const screenshotPath = "../../docs/console-overview.png"

// findChromium returns the path of a Chromium or Chrome, or "".
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newBrowser starts a headless Chromium in a fresh profile and returns the
// context of its first tab. It skips the test where no Chromium is
// installed (CI installs Debian's chromium).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := findChromium()
	if path == "" {
		t.Skip("chromium is not installed (apt-get install chromium): the browser test of the console cannot run")
	}
	profile, err := os.MkdirTemp("", "herald-console-chromium-")
	require.NoError(t, err)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // stops the browser and waits for it
		_ = os.RemoveAll(profile)
	})
	require.NoError(t, chromedp.Do(ctx), "start chromium at %s", path)
	return ctx
}

// javaScript switches the page's own scripts on or off; the test's
// DevTools commands run either way.
func javaScript(on bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: !on})
		return err
	})
}

// consoleWorld is a sending Herald on a fresh database with a fake FCM,
// after three authors got three comments each: alice's phone failed once
// (the next push to it goes through), bob's watch fails every push,
// carol's old phone is dead, and one outbox message of an event type no
// rule knows was dead-lettered.
type consoleWorld struct {
	h    *herald.Herald
	pool *pgxpool.Pool
	fake *testutil.FakeFCM
}

func newConsoleWorld(t *testing.T) *consoleWorld {
	t.Helper()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	fcm, err := herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	h, err := herald.New(pool, fcm, rules, herald.Config{
		Logger: slog.New(slog.DiscardHandler),
		Sender: herald.SenderConfig{
			PollInterval: 50 * time.Millisecond,
			// dave's phone's push waits for its retry while the test runs.
			Retry: notification.RetryPolicy{MaxAttempts: 5, BaseDelay: 5 * time.Minute, MaxDelay: 10 * time.Minute},
		},
		FCM: herald.FCMConfig{BreakerFailures: 50},
	})
	require.NoError(t, err)
	w := &consoleWorld{h: h, pool: pool, fake: fake}

	for _, d := range []struct {
		user, token string
		platform    notification.Platform
	}{
		{"alice", "alice-phone", notification.PlatformAndroid}, {"alice", "alice-tablet", notification.PlatformAndroid},
		{"bob", "bob-phone", notification.PlatformAndroid}, {"bob", "bob-watch", notification.PlatformAndroid},
		{"carol", "carol-old-phone", notification.PlatformAndroid}, {"carol", "carol-phone", notification.PlatformAndroid},
		{"dave", "dave-phone", notification.PlatformIOS},
	} {
		require.NoError(t, h.Tokens().Register(ctx, d.user, d.token, d.platform))
	}
	fake.FailToken("alice-phone", testutil.Fault{Code: testutil.FaultInvalidMessage, Times: 1})
	fake.FailToken("bob-watch", testutil.Fault{Code: testutil.FaultInvalidMessage})
	fake.FailToken("carol-old-phone", testutil.Fault{Code: testutil.FaultUnregistered})
	// APNs refuses the project's key: Herald retries after its delay
	// (iOS alone pauses), and the firebase SDK does not retry a 401 itself.
	fake.FailToken("dave-phone", testutil.Fault{Code: testutil.FaultThirdPartyAuth})
	_, err = pool.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		VALUES ('order-shipped-1', '{"v":1,"events":[{"type":"order_shipped","data":{},"notifications":[]}]}', '{}', pg_current_xact_id())`)
	require.NoError(t, err)
	// alice's first comment goes alone, so that her phone's one failure is
	// that comment's push.
	w.comment(t, "ann", "Ann", "alice", "go", "Go for operators")
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); assert.NoError(t, h.Run(runCtx)) }()
	t.Cleanup(func() { stop(); wg.Wait() })
	w.waitFor(t, func(c map[notification.DeliveryStatus]int) bool { return c[notification.StatusFailed] == 1 })
	for _, by := range []string{"dan", "eve"} {
		w.comment(t, by, strings.ToUpper(by[:1])+by[1:], "alice", "go", "Go for operators")
	}
	for _, by := range []string{"ann", "dan", "eve"} {
		w.comment(t, by, strings.ToUpper(by[:1])+by[1:], "bob", "sql", "SQL for operators")
		w.comment(t, by, strings.ToUpper(by[:1])+by[1:], "carol", "k8s", "Kubernetes the hard way")
	}
	w.comment(t, "ann", "Ann", "dave", "sre", "Site reliability")
	w.waitFor(t, func(c map[notification.DeliveryStatus]int) bool {
		return c[notification.StatusPending]+c[notification.StatusClaimed] == 0 &&
			c[notification.StatusRetryScheduled] == 1 && c[notification.StatusSent] > 0 && c[notification.StatusFailed] == 4
	})
	require.Eventually(t, func() bool {
		dls, err := h.DeadLetters(ctx, true, 10)
		return err == nil && len(dls) == 1
	}, 20*time.Second, 20*time.Millisecond)
	return w
}

func (w *consoleWorld) comment(t *testing.T, by, name, author, course, title string) {
	t.Helper()
	ctx := context.Background()
	tx, err := w.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = w.h.Raise(ctx, tx, notification.CommentCreated{
		CourseID: course, CourseTitle: title, CommentID: fmt.Sprintf("%s-%s-%d", by, course, time.Now().UnixNano()),
		CommenterID: by, CommenterName: name, CourseAuthorID: author,
	})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
}

func (w *consoleWorld) waitFor(t *testing.T, done func(map[notification.DeliveryStatus]int) bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := w.h.CountDeliveries(context.Background())
		return err == nil && done(c)
	}, 20*time.Second, 20*time.Millisecond)
}

// failedOf returns the failed deliveries to token.
func (w *consoleWorld) failedOf(t *testing.T, token string) []int64 {
	t.Helper()
	ds, err := w.h.ListFailed(context.Background(), 100)
	require.NoError(t, err)
	var ids []int64
	for _, d := range ds {
		if d.Token() == token {
			ids = append(ids, d.ID())
		}
	}
	return ids
}

// TestConsoleInChromium is an operator at work in a real browser with
// JavaScript off: the overview shows the failures, a failed delivery is
// retried from its page through the confirmation and then shows as sent,
// a dead letter is replayed, the user's page shows devices by hash and no
// content, a notification found by its id has its waiting push
// cancelled; and a POST without the console's token, whether from the
// console's own origin or from another site, changes nothing.
func TestConsoleInChromium(t *testing.T) {
	w := newConsoleWorld(t)
	ctx := context.Background()
	mux := http.NewServeMux()
	// The host's authentication would wrap this; the console has none.
	mux.Handle("/admin/herald/", http.StripPrefix("/admin/herald", w.h.Console(herald.ConsoleOptions{Title: "Herald · courses"})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	base := srv.URL + "/admin/herald/"

	browser := newBrowser(t)
	tab, cancel := context.WithTimeout(browser, time.Minute) // a bound for a loaded CI machine; it takes some 10 s
	defer cancel()
	require.NoError(t, chromedp.Do(tab, javaScript(false), chromedp.EmulateViewport(1280, 900)))

	// The overview.
	require.NoError(t, chromedp.Do(tab, chromedp.Navigate(base)))
	failed, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("#count-failed .n")))
	require.NoError(t, err)
	assert.Equal(t, "4", failed)
	instances, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("#instances")))
	require.NoError(t, err)
	assert.Contains(t, instances, "leader", "this process, the only instance, leads")
	if *update {
		png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(screenshotPath), 0o755))
		require.NoError(t, os.WriteFile(screenshotPath, png, 0o644))
		t.Logf("wrote %s", screenshotPath)
	}

	// Find alice's phone's failure and retry it.
	alice := w.failedOf(t, "alice-phone")
	require.Len(t, alice, 1)
	retryLink := chromedp.ID(fmt.Sprintf("retry-%d", alice[0]))
	require.NoError(t, chromedp.Do(tab,
		chromedp.Click(chromedp.CSS(`nav a[href="failed"]`)),
		chromedp.WaitVisible(retryLink),
	))
	row, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS(fmt.Sprintf(`tr:has(#retry-%d)`, alice[0]))))
	require.NoError(t, err)
	assert.Contains(t, row, herald.TokenHash("alice-phone"))
	assert.Contains(t, row, "INVALID_ARGUMENT")
	require.NoError(t, chromedp.Do(tab, chromedp.Click(retryLink), chromedp.WaitVisible(chromedp.ID("confirm"))))
	heading, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("h1")))
	require.NoError(t, err)
	assert.Equal(t, "Retry 1 failed delivery?", heading)
	require.NoError(t, chromedp.Do(tab, chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.CSS(".notice"))))
	notice, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS(".notice")))
	require.NoError(t, err)
	assert.Equal(t, "1 failed delivery made pending again.", notice)
	require.Eventually(t, func() bool { return len(w.fake.AcceptedFor("alice-phone")) == 3 }, 20*time.Second, 20*time.Millisecond)

	// Search for alice, open that notification's timeline: delivered.
	delivery := chromedp.ID(fmt.Sprintf("delivery-%d", alice[0]))
	ds, err := w.h.ListFailed(ctx, 100)
	require.NoError(t, err)
	assert.Len(t, ds, 3, "bob's watch still fails")
	var notificationID string
	for _, d := range mustDeliveriesOfUser(t, w, "alice-phone") {
		if d == alice[0] {
			notificationID = w.notificationOf(t, d)
		}
	}
	require.NotEmpty(t, notificationID)
	require.NoError(t, chromedp.Do(tab,
		chromedp.SendKeys(chromedp.CSS(`header input[name="q"]`), "alice"+kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`a[href="notification?id=`+notificationID+`"]`)),
	))
	userPage, err := chromedp.Run(tab, chromedp.OuterHTML(chromedp.CSS("main")))
	require.NoError(t, err)
	assert.Contains(t, userPage, herald.TokenHash("alice-tablet"))
	assert.NotContains(t, userPage, "alice-tablet", "tokens are shown only as their hash")
	assert.NotContains(t, userPage, "Go for operators", "no content unless the host opts in")
	require.NoError(t, chromedp.Do(tab,
		chromedp.Click(chromedp.CSS(`a[href="notification?id=`+notificationID+`"]`)),
		chromedp.WaitVisible(delivery),
	))
	status, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS(fmt.Sprintf("#delivery-%d .badge", alice[0]))))
	require.NoError(t, err)
	assert.Equal(t, "sent", status)

	// Replay the dead letter.
	dls, err := w.h.DeadLetters(ctx, true, 10)
	require.NoError(t, err)
	require.Len(t, dls, 1)
	replayLink := chromedp.ID(fmt.Sprintf("replay-%d", dls[0].ID))
	require.NoError(t, chromedp.Do(tab,
		chromedp.Click(chromedp.CSS(`nav a[href="deadletters"]`)),
		chromedp.WaitVisible(replayLink),
		chromedp.Click(replayLink),
		chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.CSS(".notice")),
	))
	notice, err = chromedp.Run(tab, chromedp.Text(chromedp.CSS(".notice")))
	require.NoError(t, err)
	assert.Equal(t, "1 dead letter replayed onto the outbox.", notice)
	all, err := w.h.DeadLetters(ctx, false, 10)
	require.NoError(t, err)
	var replayed bool
	for _, d := range all {
		replayed = replayed || (d.ID == dls[0].ID && !d.ReplayedAt.IsZero())
	}
	assert.True(t, replayed, "dead letter %d replayed", dls[0].ID)

	// Cancel dave's notification, whose push waits for a retry.
	daves := mustDeliveriesOfUser(t, w, "dave-phone")
	require.Len(t, daves, 1)
	daveNotification := w.notificationOf(t, daves[0])
	require.NoError(t, chromedp.Do(tab,
		chromedp.SendKeys(chromedp.CSS(`header input[name="q"]`), daveNotification+kb.Enter),
		chromedp.WaitVisible(chromedp.ID("cancel")),
		chromedp.Click(chromedp.ID("cancel")),
		chromedp.WaitVisible(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.CSS(".notice")),
	))
	notice, err = chromedp.Run(tab, chromedp.Text(chromedp.CSS(".notice")))
	require.NoError(t, err)
	assert.Equal(t, "1 undelivered push cancelled.", notice)
	status, err = chromedp.Run(tab, chromedp.Text(chromedp.CSS(fmt.Sprintf("#delivery-%d .badge", daves[0]))))
	require.NoError(t, err)
	assert.Equal(t, "cancelled", status)
	assert.Empty(t, w.fake.AcceptedFor("dave-phone"))

	// The confirmation form with its token taken out, as a person
	// tampering with the page would: refused.
	bob := w.failedOf(t, "bob-watch")
	require.Len(t, bob, 3)
	require.NoError(t, chromedp.Do(tab,
		chromedp.Navigate(fmt.Sprintf("%sretry?id=%d", base, bob[0])),
		chromedp.WaitVisible(chromedp.ID("confirm")),
	))
	tokenInput, err := chromedp.Run(tab, chromedp.QueryNodeIDs(chromedp.CSS(`input[name="csrf"]`)))
	require.NoError(t, err)
	require.Len(t, tokenInput, 1)
	require.NoError(t, chromedp.Do(tab,
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, dom.RemoveNode, dom.RemoveNodeParams{NodeID: tokenInput[0]})
			return err
		}),
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.WaitNotPresent(chromedp.ID("confirm")),
	))
	refusal, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("main")))
	require.NoError(t, err)
	assert.Contains(t, refusal, "Refused")
	assert.Contains(t, refusal, "no valid token")

	// A form on another site that posts to the console: refused.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%sretry"><input type="hidden" name="all" value="1">
<button id="win" type="submit">Claim your prize</button></form>`, base)
	}))
	t.Cleanup(evil.Close)
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1) // another site, not only another port
	require.NoError(t, chromedp.Do(tab,
		chromedp.Navigate(evilURL),
		chromedp.Click(chromedp.ID("win")),
		chromedp.WaitVisible(chromedp.CSS("h1")),
	))
	refusal, err = chromedp.Run(tab, chromedp.Text(chromedp.CSS("main")))
	require.NoError(t, err)
	assert.Contains(t, refusal, "Refused")
	assert.Contains(t, refusal, "came from another site")
	assert.Len(t, w.failedOf(t, "bob-watch"), 3, "the refused POSTs changed nothing")
}

// mustDeliveriesOfUser returns the ids of every delivery to token.
func mustDeliveriesOfUser(t *testing.T, w *consoleWorld, token string) []int64 {
	t.Helper()
	var ids []int64
	rows, err := w.pool.Query(context.Background(), `SELECT id FROM herald_deliveries WHERE token = $1`, token)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	return ids
}

// notificationOf returns the notification of delivery id.
func (w *consoleWorld) notificationOf(t *testing.T, id int64) string {
	t.Helper()
	var n string
	err := w.pool.QueryRow(context.Background(), `SELECT notification_id::text FROM herald_deliveries WHERE id = $1`, id).Scan(&n)
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	require.NoError(t, err)
	return n
}
