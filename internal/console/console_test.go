package console_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/internal/console"
)

// hostile is a value an attacker could have put in a user id, an error
// message or an event: every page must show it as text.
// Its invisible characters (a right-to-left override, a zero-width space,
// an escape) make it read as something else.
const hostile = `<script>alert(1)</script>"><img src=x onerror=alert(2)>` + "mallory\u202egnp.exe\u200b\x1b[2J"

var notificationID = uuid.MustParse("0193a4b2-7c3d-7e8f-9a0b-1c2d3e4f5a6b")

// fakeOperator is a hand-written Operator that serves hostile values and
// records the actions asked of it.
type fakeOperator struct {
	mu        sync.Mutex
	retried   [][]int64
	retryAll  int
	retryCode []string
	replayed  [][]int64
	cancelled []uuid.UUID
	// overviewErr, when set, is what Overview fails with.
	overviewErr error
}

func (f *fakeOperator) Overview(context.Context) (console.Overview, error) {
	if f.overviewErr != nil {
		return console.Overview{}, f.overviewErr
	}
	return console.Overview{
		Counts:         []console.StatusCount{{Status: "sent", Count: 7}, {Status: "failed", Count: 1}},
		StatusKnown:    true,
		DueNow:         2,
		OldestDue:      1500 * time.Millisecond,
		DeadLetters:    1,
		FailedLastHour: []console.CodeCount{{Code: hostile, Count: 1}},
		Instances:      []console.Instance{{ID: hostile, Host: hostile, PID: 1, Version: hostile, Leader: true}},
		Broadcasts:     []console.Broadcast{broadcast()},
		Breaker:        "closed",
		Process:        []console.Figure{{Name: "pushes sent", Value: 7}},
	}, nil
}

// refusal is a host database's refusal of a broadcast's delivery, which
// quotes whatever the host's trigger put in its message.
const refusal = "tok_0123456789ab: deliveries to tok_0123456789ab are refused " + hostile

func broadcast() console.Broadcast {
	return console.Broadcast{NotificationID: notificationID, Type: hostile, Expanded: 997, Refused: 3, Refusal: refusal,
		HeldUntil: heldUntil, Holds: 4, HeldReason: "tok_0123456789ab: deliveries are frozen " + hostile,
		StartedAt: time.Now().Add(-time.Minute)}
}

func (f *fakeOperator) delivery() console.Delivery {
	return console.Delivery{
		ID: 42, NotificationID: notificationID, Recipient: hostile, TokenHash: "tok_0123456789ab",
		Status: "failed", Attempts: 3, Code: hostile, LastError: hostile, UpdatedAt: time.Now().Add(-time.Minute),
		History: []console.Attempt{{At: time.Now(), Outcome: "failed", Code: hostile, Error: hostile}},
	}
}

func (f *fakeOperator) Deliveries(_ context.Context, q console.Query) (console.Page, error) {
	switch q.Cursor {
	case "":
		return console.Page{Deliveries: []console.Delivery{f.delivery()}, Next: hostile}, nil
	case hostile:
		return console.Page{}, nil
	default:
		return console.Page{}, console.ErrInvalidQuery
	}
}

func (f *fakeOperator) RetryFailedWithCode(_ context.Context, code string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retryCode = append(f.retryCode, code)
	return 3, nil
}

func (f *fakeOperator) RetryFailed(_ context.Context, ids []int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retried = append(f.retried, ids)
	return len(ids), nil
}

func (f *fakeOperator) RetryAllFailed(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retryAll++
	return 5, nil
}

func (f *fakeOperator) DeadLetters(context.Context, bool, int) ([]console.DeadLetter, error) {
	return []console.DeadLetter{{ID: 9, Topic: hostile, MessageUUID: hostile, Reason: hostile, Payload: hostile, PayloadBytes: 1 << 20, CreatedAt: time.Now()}}, nil
}

func (f *fakeOperator) ReplayDeadLetters(_ context.Context, ids []int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replayed = append(f.replayed, ids)
	return len(ids), nil
}

func (f *fakeOperator) User(_ context.Context, id string, _ int) (console.User, error) {
	return console.User{
		ID:            id,
		Devices:       []console.Device{{TokenHash: "tok_0123456789ab", Platform: hostile, RegisteredAt: time.Now()}},
		Notifications: []console.Notification{{ID: notificationID, Type: hostile, Title: hostile, Body: hostile, CreatedAt: time.Now()}},
	}, nil
}

func (f *fakeOperator) Timeline(_ context.Context, id uuid.UUID) (console.Timeline, error) {
	if id != notificationID {
		return console.Timeline{}, console.ErrNotFound
	}
	d := f.delivery()
	d.Status = "retry_scheduled"
	b := broadcast()
	return console.Timeline{
		Notification: console.Notification{ID: id, Recipient: hostile, Type: hostile, Title: hostile, CreatedAt: time.Now()},
		Counts:       []console.StatusCount{{Status: "retry_scheduled", Count: 1}},
		Deliveries:   []console.Delivery{d},
		Broadcast:    &b,
	}, nil
}

func (f *fakeOperator) CancelNotification(_ context.Context, id uuid.UUID) (int, error) {
	if id != notificationID {
		return 0, console.ErrNotFound
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelled = append(f.cancelled, id)
	return 1, nil
}

// newConsole serves a console over a fresh fakeOperator under /ops/, as a
// host mounts it.
func newConsole(t *testing.T) (*fakeOperator, *httptest.Server) {
	t.Helper()
	op := &fakeOperator{}
	mux := http.NewServeMux()
	mux.Handle("/ops/", http.StripPrefix("/ops", console.New(op, console.Options{})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return op, srv
}

// client is a browser-like client: it keeps cookies and does not follow
// redirects, so that a test sees them.
func client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := newJar()
	require.NoError(t, err)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func get(t *testing.T, c *http.Client, u string) (int, string, http.Header) {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	var b strings.Builder
	_, err = ioCopy(&b, resp)
	require.NoError(t, err)
	return resp.StatusCode, b.String(), resp.Header
}

func post(t *testing.T, c *http.Client, u string, form url.Values, headers map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var b strings.Builder
	_, err = ioCopy(&b, resp)
	require.NoError(t, err)
	return resp.StatusCode, b.String(), resp.Header
}

var tokenInForm = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// confirmToken opens a confirmation page and returns its form's token.
func confirmToken(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	status, body, _ := get(t, c, u)
	require.Equal(t, http.StatusOK, status, body)
	m := tokenInForm.FindStringSubmatch(body)
	require.NotNil(t, m, "no token in %s", body)
	return m[1]
}

// everyPage is a path of each page the console serves, over the fake's
// hostile values.
var everyPage = []string{
	"/ops/", "/ops/failed", "/ops/failed?cursor=" + url.QueryEscape(hostile), "/ops/failed?code=UNAVAILABLE", "/ops/deadletters", "/ops/deadletters?all=1",
	"/ops/search?q=" + url.QueryEscape(hostile), "/ops/notification?id=" + notificationID.String(),
	"/ops/retry?id=42", "/ops/replay?id=9", "/ops/cancel?id=" + notificationID.String(),
	"/ops/notification?id=" + url.QueryEscape(hostile),
}

func TestConsole_EveryPageShowsHostileValuesAsText(t *testing.T) {
	t.Parallel()
	_, srv := newConsole(t)
	c := client(t)
	for _, path := range everyPage {
		t.Run(path, func(t *testing.T) {
			_, body, h := get(t, c, srv.URL+path)
			assert.NotContains(t, body, "<script>alert")
			assert.NotContains(t, body, "<img src=x")
			assert.Contains(t, h.Get("Content-Security-Policy"), "default-src 'none'")
			assert.Equal(t, "DENY", h.Get("X-Frame-Options"))
			assert.Equal(t, "text/html; charset=utf-8", h.Get("Content-Type"))
		})
	}
	_, body, _ := get(t, c, srv.URL+"/ops/failed")
	assert.Contains(t, body, "&lt;script&gt;alert(1)&lt;/script&gt;", "shown escaped")
}

// A user id, event type, error or reason holding a right-to-left override
// reorders what the operator reads ("mallory\u202egnp.exe" shows as
// "malloryexe.png", and the rest of its table cell with it), and one holding
// a zero-width space looks like another user's: the CLI escapes them, and
// so does every page of the console. Content (titles, bodies, payloads) is
// shown as written but isolated (<bdi>), so that it reorders nothing
// around it; a search box keeps what the operator typed.
func TestConsole_EveryPageShowsInvisibleAndReorderingCharactersEscaped(t *testing.T) {
	t.Parallel()
	_, srv := newConsole(t)
	c := client(t)
	isolated := regexp.MustCompile(`(?s)<bdi>.*?</bdi>|value="[^"]*"`)
	for _, path := range everyPage {
		t.Run(path, func(t *testing.T) {
			_, body, _ := get(t, c, srv.URL+path)
			rest := isolated.ReplaceAllString(body, "")
			for _, r := range "\u202e\u200b\x1b" {
				assert.False(t, strings.ContainsRune(rest, r), "%U shown raw", r)
			}
		})
	}
	_, body, _ := get(t, c, srv.URL+"/ops/failed")
	assert.Contains(t, body, `mallory\u202egnp.exe\u200b\x1b[2J`, "shown escaped, as the CLI shows it")
	_, body, _ = get(t, c, srv.URL+"/ops/notification?id="+notificationID.String())
	assert.Contains(t, body, "<bdi><strong>", "content isolated")
}

// A listing carries only the beginning of a large dead letter's payload:
// the page says how large it is and that only its beginning is shown.
func TestConsole_ADeadLettersPayloadSaysWhenOnlyItsBeginningIsShown(t *testing.T) {
	t.Parallel()
	_, srv := newConsole(t)
	_, body, _ := get(t, client(t), srv.URL+"/ops/deadletters")
	assert.Contains(t, body, fmt.Sprintf("payload, 1048576 bytes (the first %d shown)", len(hostile)))
}

// Refused deliveries of a broadcast (a host's trigger or constraint on
// herald_deliveries) were shown by Status and the CLI but not the console:
// the overview and the notification's page show how many and the last
// reason, as text.
func TestConsole_ABroadcastsRefusedDeliveriesAreShownWithTheLastReason(t *testing.T) {
	t.Parallel()
	_, srv := newConsole(t)
	c := client(t)
	escaped := "deliveries to tok_0123456789ab are refused &lt;script&gt;alert(1)&lt;/script&gt;"
	_, body, _ := get(t, c, srv.URL+"/ops/")
	assert.Contains(t, body, "Refused by the database")
	assert.Contains(t, body, `<td class="num">3</td>`)
	assert.Contains(t, body, escaped)
	_, body, _ = get(t, c, srv.URL+"/ops/notification?id="+notificationID.String())
	assert.Contains(t, body, "<dt>Refused by the database</dt><dd>3 deliveries")
	assert.Contains(t, body, escaped)
}

// heldUntil is when the fake's held broadcast is tried again.
var heldUntil = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

// A broadcast held because the database refused its next chunk whole (a
// host's freeze) showed only in a log line; the overview and the
// notification's page say it is held, until when, after how many refused
// tries, and why, as text.
func TestConsole_AHeldBroadcastIsShownWithWhyAndUntilWhen(t *testing.T) {
	t.Parallel()
	_, srv := newConsole(t)
	c := client(t)
	escaped := "tok_0123456789ab: deliveries are frozen &lt;script&gt;alert(1)&lt;/script&gt;"
	_, body, _ := get(t, c, srv.URL+"/ops/")
	assert.Contains(t, body, "<th>Held</th>")
	assert.Contains(t, body, "4 tries refused whole: "+escaped)
	assert.Contains(t, body, "2031")
	_, body, _ = get(t, c, srv.URL+"/ops/notification?id="+notificationID.String())
	assert.Contains(t, body, "<dt>Held</dt><dd>the database refused every delivery of its next chunk (4 tries in a row), so none of them is skipped")
	assert.Contains(t, body, escaped)
	assert.NotContains(t, body, "<script>alert")
}

func TestConsole_TheOverviewRefreshesItself(t *testing.T) {
	t.Parallel()
	_, srv := newConsole(t)
	status, body, _ := get(t, client(t), srv.URL+"/ops/")
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, `<meta http-equiv="refresh" content="10">`)
	assert.Contains(t, body, "Deliveries due now")
}

func TestConsole_ConfirmationPagesChangeNothing(t *testing.T) {
	t.Parallel()
	op, srv := newConsole(t)
	c := client(t)
	for _, path := range []string{"/ops/retry?id=42", "/ops/retry?all=1", "/ops/retry?code=UNAVAILABLE", "/ops/replay?id=9", "/ops/cancel?id=" + notificationID.String()} {
		status, body, _ := get(t, c, srv.URL+path)
		assert.Equal(t, http.StatusOK, status, path)
		assert.Contains(t, body, `<form method="post"`, path)
	}
	assert.Empty(t, op.retried)
	assert.Empty(t, op.retryCode)
	assert.Zero(t, op.retryAll)
	assert.Empty(t, op.replayed)
	assert.Empty(t, op.cancelled)
}

func TestConsole_AConfirmedRetryReplayAndCancelAct(t *testing.T) {
	t.Parallel()
	op, srv := newConsole(t)
	c := client(t)

	tok := confirmToken(t, c, srv.URL+"/ops/retry?id=42&id=43&id=42")
	status, _, h := post(t, c, srv.URL+"/ops/retry", url.Values{"id": {"42", "43"}, "csrf": {tok}}, nil)
	require.Equal(t, http.StatusSeeOther, status)
	assert.Equal(t, "failed?retried=2", h.Get("Location"))
	assert.Equal(t, [][]int64{{42, 43}}, op.retried)
	_, body, _ := get(t, c, srv.URL+"/ops/failed?retried=2")
	assert.Contains(t, body, "2 failed deliveries made pending again.")

	tok = confirmToken(t, c, srv.URL+"/ops/retry?all=1")
	status, _, _ = post(t, c, srv.URL+"/ops/retry", url.Values{"all": {"1"}, "csrf": {tok}}, nil)
	require.Equal(t, http.StatusSeeOther, status)
	assert.Equal(t, 1, op.retryAll)

	tok = confirmToken(t, c, srv.URL+"/ops/retry?code=UNAVAILABLE")
	status, _, h = post(t, c, srv.URL+"/ops/retry", url.Values{"code": {"UNAVAILABLE"}, "csrf": {tok}}, nil)
	require.Equal(t, http.StatusSeeOther, status)
	assert.Equal(t, "failed?retried=3", h.Get("Location"))
	assert.Equal(t, []string{"UNAVAILABLE"}, op.retryCode)

	tok = confirmToken(t, c, srv.URL+"/ops/replay?id=9")
	status, _, h = post(t, c, srv.URL+"/ops/replay", url.Values{"id": {"9"}, "csrf": {tok}}, nil)
	require.Equal(t, http.StatusSeeOther, status)
	assert.Equal(t, "deadletters?replayed=1", h.Get("Location"))
	assert.Equal(t, [][]int64{{9}}, op.replayed)

	tok = confirmToken(t, c, srv.URL+"/ops/cancel?id="+notificationID.String())
	status, _, h = post(t, c, srv.URL+"/ops/cancel", url.Values{"id": {notificationID.String()}, "csrf": {tok}}, nil)
	require.Equal(t, http.StatusSeeOther, status)
	assert.Equal(t, "notification?id="+notificationID.String()+"&cancelled=1", h.Get("Location"))
	assert.Equal(t, []uuid.UUID{notificationID}, op.cancelled)
}

func TestConsole_APostWithoutAValidTokenIsRefusedAndChangesNothing(t *testing.T) {
	t.Parallel()
	op, srv := newConsole(t)
	c := client(t)
	replayTok := confirmToken(t, c, srv.URL+"/ops/replay?id=9")
	other := client(t)
	otherTok := confirmToken(t, other, srv.URL+"/ops/retry?id=42")
	for name, form := range map[string]url.Values{
		"no token":                             {"id": {"42"}},
		"an empty token":                       {"id": {"42"}, "csrf": {""}},
		"a made-up token":                      {"id": {"42"}, "csrf": {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
		"the token of another action":          {"id": {"42"}, "csrf": {replayTok}},
		"the token of another browser session": {"id": {"42"}, "csrf": {otherTok}},
	} {
		status, body, _ := post(t, c, srv.URL+"/ops/retry", form, nil)
		assert.Equal(t, http.StatusForbidden, status, name)
		assert.Contains(t, body, "Nothing was changed", name)
	}
	// A client with no cookie at all, token or not.
	status, _, _ := post(t, &http.Client{}, srv.URL+"/ops/retry", url.Values{"id": {"42"}, "csrf": {otherTok}}, nil)
	assert.Equal(t, http.StatusForbidden, status)
	assert.Empty(t, op.retried)
}

func TestConsole_APostFromAnotherSiteIsRefusedEvenWithAValidToken(t *testing.T) {
	t.Parallel()
	op, srv := newConsole(t)
	c := client(t)
	tok := confirmToken(t, c, srv.URL+"/ops/retry?id=42")
	status, _, _ := post(t, c, srv.URL+"/ops/retry", url.Values{"id": {"42"}, "csrf": {tok}},
		map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
	assert.Equal(t, http.StatusForbidden, status)
	assert.Empty(t, op.retried)
}

func TestConsole_IdsAreParsedStrictly(t *testing.T) {
	t.Parallel()
	op, srv := newConsole(t)
	c := client(t)
	for _, bad := range []string{"", "0", "-1", "+1", " 1", "1 ", "1abc", "0x10", "1e3", "99999999999999999999", "４２"} {
		status, _, _ := get(t, c, srv.URL+"/ops/retry?id="+url.QueryEscape(bad))
		assert.Equal(t, http.StatusBadRequest, status, "delivery id %q", bad)
	}
	status, _, _ := get(t, c, srv.URL+"/ops/retry?id=1&id=x")
	assert.Equal(t, http.StatusBadRequest, status, "one bad id among good ones")
	for _, bad := range []string{"", "{" + notificationID.String() + "}", "urn:uuid:" + notificationID.String(),
		strings.ReplaceAll(notificationID.String(), "-", ""), notificationID.String() + " "} {
		status, _, _ := get(t, c, srv.URL+"/ops/notification?id="+url.QueryEscape(bad))
		assert.Equal(t, http.StatusBadRequest, status, "notification id %q", bad)
	}
	status, _, _ = get(t, c, srv.URL+"/ops/notification?id="+uuid.NewString())
	assert.Equal(t, http.StatusNotFound, status)
	for _, bad := range []string{"unavailable", "A B", "<X>", "UNAVAILABLE;", strings.Repeat("A", 65)} {
		status, _, _ = get(t, c, srv.URL+"/ops/retry?code="+url.QueryEscape(bad))
		assert.Equal(t, http.StatusBadRequest, status, "code %q", bad)
		status, _, _ = get(t, c, srv.URL+"/ops/failed?code="+url.QueryEscape(bad))
		assert.Equal(t, http.StatusBadRequest, status, "code %q", bad)
	}
	status, _, _ = get(t, c, srv.URL+"/ops/failed?cursor=made-up")
	assert.Equal(t, http.StatusBadRequest, status, "a cursor the operator did not make")

	// A valid token does not make a bad id acceptable.
	tok := confirmToken(t, c, srv.URL+"/ops/retry?id=42")
	status, _, _ = post(t, c, srv.URL+"/ops/retry", url.Values{"id": {"42 OR 1=1"}, "csrf": {tok}}, nil)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Empty(t, op.retried)
}

func TestConsole_SearchingANotificationIdOpensItsTimelineAndAnyOtherIdTheUser(t *testing.T) {
	t.Parallel()
	_, srv := newConsole(t)
	c := client(t)
	status, _, h := get(t, c, srv.URL+"/ops/search?q="+notificationID.String())
	require.Equal(t, http.StatusSeeOther, status)
	assert.Equal(t, "notification?id="+notificationID.String(), h.Get("Location"))
	status, body, _ := get(t, c, srv.URL+"/ops/search?q=alice")
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, "tok_0123456789ab")

	userID := uuid.NewString() // a host whose user ids are UUIDs
	status, body, _ = get(t, c, srv.URL+"/ops/search?q="+userID)
	require.Equal(t, http.StatusOK, status, "no notification has that id: it is a user")
	assert.Contains(t, body, userID)
}

func TestConsole_StateChangesNeedAPost(t *testing.T) {
	t.Parallel()
	op, srv := newConsole(t)
	req, err := http.NewRequest(http.MethodPut, srv.URL+"/ops/retry?id=42", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	status, _, _ := get(t, client(t), srv.URL+"/ops/nowhere")
	assert.Equal(t, http.StatusNotFound, status)
	assert.Empty(t, op.retried)
}

func TestConsole_RefusedPostsAreLoggedOncePerMinuteWithTheirCount(t *testing.T) {
	t.Parallel()
	var logged strings.Builder
	var mu sync.Mutex
	now := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	h := console.New(&fakeOperator{}, console.Options{
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil)),
		Now:    func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for range 50 {
		status, _, _ := post(t, &http.Client{}, srv.URL+"/retry", url.Values{"all": {"1"}}, nil)
		require.Equal(t, http.StatusForbidden, status)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	status, _, _ := post(t, &http.Client{}, srv.URL+"/retry", url.Values{"all": {"1"}}, nil)
	require.Equal(t, http.StatusForbidden, status)
	mu.Lock()
	defer mu.Unlock()
	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	require.Len(t, lines, 2, logged.String())
	assert.Contains(t, lines[0], "count=1 ")
	assert.Contains(t, lines[1], "count=50 ", "the 49 refused meanwhile and this one")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestConsole_AShortKeyIsAProgrammerError(t *testing.T) {
	t.Parallel()
	assert.Panics(t, func() { console.New(&fakeOperator{}, console.Options{Key: []byte("short")}) })
	assert.Panics(t, func() { console.New(nil, console.Options{}) })
	assert.NotPanics(t, func() { console.New(&fakeOperator{}, console.Options{Key: make([]byte, 16)}) })
}

func TestConsole_AServerErrorPageNamesALogReferenceNotTheDatabaseError(t *testing.T) {
	t.Parallel()
	var logged strings.Builder
	var mu sync.Mutex
	dbErr := errors.New(`ERROR: permission denied for table herald_deliveries (SQLSTATE 42501)`)
	h := console.New(&fakeOperator{overviewErr: fmt.Errorf("overview: %w", dbErr)}, console.Options{
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil)),
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	status, body, _ := get(t, &http.Client{}, srv.URL+"/")
	require.Equal(t, http.StatusInternalServerError, status)
	assert.NotContains(t, body, "herald_deliveries")
	assert.NotContains(t, body, "SQLSTATE")
	ref := regexp.MustCompile(`ref=([0-9a-f]{12})`).FindStringSubmatch(body)
	require.NotNil(t, ref, "the page names a reference:\n%s", body)

	mu.Lock()
	log := logged.String()
	mu.Unlock()
	assert.Contains(t, log, "ref="+ref[1], "the log line carries the same reference")
	assert.Contains(t, log, "permission denied for table herald_deliveries", "and the error itself")

	status, body, _ = get(t, &http.Client{}, srv.URL+"/notification?id=not-a-uuid")
	require.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, body, "not a notification id", "a refused request still says what was wrong with it")
}
