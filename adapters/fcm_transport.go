package adapters

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/oauth2"

	"github.com/herald-push/herald/internal/telemetry"
)

// fcmTransport sits under the firebase SDK's HTTP client, above the
// authenticating transport, so that it sees every HTTP attempt, the SDK's
// own retries included. It holds the circuit breaker: each attempt passes
// through it and is judged on its answer, and an open breaker refuses an
// attempt at once, without a request, and cancels the push it belongs to so
// the SDK stops retrying. It also holds the ramp, which lets one request
// out until FCM first answers and widens the door as answers come back.
//
// Until an FCMSender installs a breaker, requests pass straight through.
type fcmTransport struct {
	base    http.RoundTripper
	breaker atomic.Pointer[fcmBreaker]
}

// errAttemptExcluded and errProviderFailure are the verdicts an attempt
// reports to the breaker; nil is a success.
var (
	errAttemptExcluded = errors.New("attempt says nothing about fcm")
	errProviderFailure = errors.New("fcm failed")
)

// errBreakerOpened is the cancellation cause of a push the breaker stopped.
var errBreakerOpened = errors.New("fcm circuit breaker is open")

// errPushAccepted is the cancellation cause of a push the SDK tried to send
// again after FCM had accepted it (its answer's body could not be read).
var errPushAccepted = errors.New("fcm already accepted this push")

// pushState is what the transport learns about one push's attempts. Push
// puts it in the request context; the transport fills it in.
type pushState struct {
	cancel context.CancelCauseFunc

	mu         sync.Mutex
	sent       int           // requests that went out
	retryAfter time.Duration // Retry-After of the last 503, if any
	onWire     bool          // an attempt is out and not answered yet
	stopAfter  bool          // the breaker opened during that attempt
	accepted   bool          // FCM accepted an attempt (a 2xx to its POST): the push is sent
}

// wasAccepted reports whether FCM accepted an attempt of the push.
func (ps *pushState) wasAccepted() bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.accepted
}

// stopForBreaker cancels the push because the breaker opened, unless an
// attempt of it is on the wire: FCM may already have accepted that one,
// and cancelling it would lose the acceptance and send the push again
// later. Such a push is stopped when its attempt comes back failed (see
// attemptDone); an accepted one is kept. A push FCM has accepted is never
// stopped: its answer's body may still be on its way, and cancelling the
// push would lose it just the same.
func (ps *pushState) stopForBreaker() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.accepted {
		return
	}
	if ps.onWire {
		ps.stopAfter = true
		return
	}
	ps.cancel(errBreakerOpened)
}

// attemptStarted marks an attempt on the wire.
func (ps *pushState) attemptStarted() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.sent++
	ps.onWire = true
}

// attemptAborted takes back an attemptStarted whose request never went
// out.
func (ps *pushState) attemptAborted() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.sent--
	ps.onWire = false
}

// attemptDone marks the attempt answered; if the breaker opened meanwhile
// and FCM did not accept it, the push stops here instead of retrying.
func (ps *pushState) attemptDone(accepted bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.onWire = false
	ps.accepted = ps.accepted || accepted
	if ps.stopAfter && !accepted {
		ps.cancel(errBreakerOpened)
	}
}

type pushStateKey struct{}

func pushStateFrom(ctx context.Context) *pushState {
	ps, _ := ctx.Value(pushStateKey{}).(*pushState)
	return ps
}

func (ps *pushState) snapshot() (sent int, retryAfter time.Duration) {
	if ps == nil {
		return 0, 0
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.sent, ps.retryAfter
}

// RoundTrip implements http.RoundTripper.
func (t *fcmTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := t.breaker.Load()
	if b == nil {
		return t.base.RoundTrip(req)
	}
	ctx := req.Context()
	ps := pushStateFrom(ctx)
	refuse := func(err error) (*http.Response, error) {
		b.tel.FCMAttempt(telemetry.AttemptRefused)
		if ps != nil {
			ps.cancel(errBreakerOpened) // the SDK must not retry: it would only be refused again
		}
		closeRequestBody(req)
		return nil, err
	}
	if ps != nil && ps.wasAccepted() {
		// The SDK retries any error reading an answer's body, a 200's too:
		// FCM has this push already, and would deliver it again. Stop the
		// push instead (Push reports it sent).
		ps.cancel(errPushAccepted)
		closeRequestBody(req)
		return nil, errPushAccepted
	}
	if b.cb.State() == gobreaker.StateOpen {
		return refuse(gobreaker.ErrOpenState)
	}
	start, err := b.ramp.acquire(ctx)
	if err != nil {
		closeRequestBody(req)
		return nil, err
	}
	done, err := b.cb.Allow()
	if err != nil {
		b.ramp.release(start, false)
		return refuse(err)
	}
	if ps != nil {
		// Marked on the wire first, then the context checked: a breaker
		// opening before the mark has cancelled the push (seen here, and
		// nothing is sent); one opening after it waits for the answer.
		// Either way no accepted request is cancelled.
		ps.attemptStarted()
		if cause := context.Cause(ctx); cause != nil {
			ps.attemptAborted()
			done(errAttemptExcluded)
			b.ramp.release(start, false)
			closeRequestBody(req)
			return nil, cause
		}
	}
	resp, err := t.base.RoundTrip(req)
	if err == nil && resp.Body != nil {
		resp.Body = &cappedBody{rc: resp.Body, left: maxAnswerBody + 1}
	}
	var body []byte
	if err == nil && resp.StatusCode >= 400 {
		// Read an error answer now: if it opens the breaker, the pushes
		// in flight are cancelled, this one too, and its answer must not
		// be lost to a cancelled body read.
		body = bufferBody(resp)
	}
	if ps != nil {
		// Accepted: a 2xx to the push's POST, not to the GET the client
		// makes to follow a 301, 302 or 303 (a page that has sent nothing).
		ps.attemptDone(err == nil && req.Method == http.MethodPost && resp.StatusCode >= 200 && resp.StatusCode < 300)
	}
	if err == nil && resp.StatusCode >= 500 {
		b.strained.Add(1)
	}
	verdict := judgeAttempt(ctx, resp, body, err, ps)
	if verdict == errProviderFailure {
		b.lastFailure.Store(describeFailure(resp, body, err))
	}
	b.tel.FCMAttempt(attemptClass(verdict))
	if verdict != errAttemptExcluded {
		b.window.record(time.Now(), verdict != nil)
	}
	done(verdict)
	b.ramp.release(start, verdict == nil)
	return resp, err
}

// maxFailureText bounds what describeFailure keeps of an error or an answer.
const maxFailureText = 300

// describeFailure says in one line, at most maxFailureText bytes, what an
// attempt judged a failure met: the transport's error (an OAuth token
// refused, a DNS or TLS failure, a timeout) or FCM's status and error code.
func describeFailure(resp *http.Response, body []byte, err error) *string {
	var s string
	var refused *oauth2.RetrieveError
	switch {
	case errors.As(err, &refused):
		detail := refused.ErrorCode + " " + refused.ErrorDescription
		if refused.ErrorCode == "" { // the service account's flow leaves them to the body
			detail = string(refused.Body)
		}
		s = "credentials refused by Google's token endpoint"
		if refused.Response != nil {
			s += " (HTTP " + strconv.Itoa(refused.Response.StatusCode) + ")"
		}
		s += ": " + strings.Join(strings.Fields(detail), " ")
	case err != nil:
		s = strings.Join(strings.Fields(err.Error()), " ")
	case resp != nil:
		s = "HTTP " + strconv.Itoa(resp.StatusCode)
		if code := fcmErrorCode(body); code != "" {
			s += " " + code
		}
	}
	if len(s) > maxFailureText {
		s = strings.ToValidUTF8(s[:maxFailureText], "") + "..."
	}
	return &s
}

// attemptClass names a judged attempt for the attempts metric.
func attemptClass(verdict error) telemetry.Attempt {
	switch verdict {
	case nil:
		return telemetry.AttemptAnswered
	case errAttemptExcluded:
		return telemetry.AttemptCancelled
	default:
		return telemetry.AttemptFailed
	}
}

func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close() // RoundTrip must close it, even on error
	}
}

// judgeAttempt decides what one HTTP attempt tells the breaker. FCM is
// failing when it answers 5xx, does not answer in time, cannot be reached,
// redirects (FCM never does: something between us and it is wrong), or
// rejects our own credentials or project (401, 403, 404 without a
// per-token FCM error code). An attempt Herald cancelled says nothing.
// Everything else is FCM working: a 2xx, a per-token or per-message 4xx
// verdict, and a 429 (throttling, not failure).
func judgeAttempt(ctx context.Context, resp *http.Response, body []byte, err error, ps *pushState) error {
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return errAttemptExcluded
		}
		return errProviderFailure // a timeout, a network error, our token source failing
	}
	switch code := resp.StatusCode; {
	case code >= 300 && code < 400:
		return errProviderFailure
	case code >= 500:
		if code == http.StatusServiceUnavailable && ps != nil {
			if ra := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ra > 0 {
				ps.mu.Lock()
				ps.retryAfter = ra
				ps.mu.Unlock()
			}
		}
		return errProviderFailure
	case foreignStatus(code):
		// Not an answer FCM gives: a proxy or a wrong endpoint answers
		// every push alike, and no push can succeed through it.
		return errProviderFailure
	case code == http.StatusUnauthorized, code == http.StatusForbidden, code == http.StatusNotFound:
		switch fcmErrorCode(body) {
		case "THIRD_PARTY_AUTH_ERROR", "SENDER_ID_MISMATCH", "UNREGISTERED":
			return nil // a verdict on one token or platform: FCM is working
		}
		return errProviderFailure // our credentials or project were rejected
	default:
		return nil
	}
}

// maxErrorBody is how much of an error answer is read ahead; FCM's are a
// few hundred bytes.
const maxErrorBody = 64 << 10

// maxAnswerBody is how much of any answer the SDK may read: FCM's are a
// message name of a few dozen bytes or an error of a few hundred. The SDK
// reads an answer whole, and an endless one (a broken proxy, a hostile
// endpoint) read 600 MB for one push before its deadline.
const maxAnswerBody = maxErrorBody

// errAnswerTooLong ends the reading of an answer over maxAnswerBody. A 2xx
// cut so is a push FCM accepted (see Push); another answer fails as one
// whose body could not be read.
var errAnswerTooLong = errors.New("fcm answer longer than any FCM gives: not read further")

// cappedBody is an answer's body that fails, instead of going on, once more
// than maxAnswerBody bytes were read (left starts one over it).
type cappedBody struct {
	rc   io.ReadCloser
	left int64
}

func (c *cappedBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errAnswerTooLong
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.rc.Read(p)
	c.left -= int64(n)
	if c.left <= 0 {
		return n - 1, errAnswerTooLong // the byte over the bound is not given
	}
	return n, err
}

func (c *cappedBody) Close() error { return c.rc.Close() }

// bufferBody reads up to maxErrorBody of resp's body into memory and leaves
// the body readable from the start for the SDK. What it read is returned.
func bufferBody(resp *http.Response) []byte {
	if resp.Body == nil {
		return nil
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil || len(head) < maxErrorBody {
		// All of it (or all there will be): the connection can go back.
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(head), errReader{err}))
		return head
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	return head
}

// errReader returns err, or io.EOF when err is nil.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) {
	if r.err == nil {
		return 0, io.EOF
	}
	return 0, r.err
}

// fcmErrorCode returns the FcmError errorCode of an FCM error body, or "".
func fcmErrorCode(body []byte) string {
	var parsed struct {
		Error struct {
			Details []struct {
				Type      string `json:"@type"`
				ErrorCode string `json:"errorCode"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &parsed) != nil {
		return ""
	}
	for _, d := range parsed.Error.Details {
		if d.Type == "type.googleapis.com/google.firebase.fcm.v1.FcmError" {
			return d.ErrorCode
		}
	}
	return ""
}

// fcmBreaker is the circuit breaker over every HTTP attempt, with the ramp
// and the pushes under way, which are stopped each time it opens.
type fcmBreaker struct {
	cb     *gobreaker.TwoStepCircuitBreaker[struct{}]
	ramp   *ramp
	window outcomeWindow
	tel    *telemetry.Telemetry
	// strained counts attempts FCM answered with a 5xx.
	strained atomic.Int64
	// lastFailure says what the last attempt judged a failure met, for the
	// line logged when the breaker opens: without it an operator saw the
	// breaker open and nothing of why (a revoked key refused by Google's
	// token endpoint, a DNS failure, a 503).
	lastFailure atomic.Pointer[string]

	// pushes are the pushes under way (FCMSender.Push tracks each). A set
	// rather than a context.AfterFunc per push on a context cancelled at
	// each opening: that cost three allocations a push.
	pushesMu sync.Mutex
	pushes   map[*pushState]struct{}
}

// breakerWindow is how far back the breaker's failure ratio looks, in
// breakerBuckets rolling buckets.
const (
	breakerWindow  = time.Second
	breakerBuckets = 10
	breakerBucket  = breakerWindow / breakerBuckets
)

// outcomeWindow counts attempt outcomes by the time they completed, over
// the last breakerWindow. It is safe for concurrent use.
type outcomeWindow struct {
	mu      sync.Mutex
	buckets [breakerBuckets]struct {
		slot       int64 // which breakerBucket-long slot of time it counts
		ok, failed uint32
	}
}

func (w *outcomeWindow) record(now time.Time, failed bool) {
	slot := now.UnixNano() / int64(breakerBucket)
	w.mu.Lock()
	defer w.mu.Unlock()
	b := &w.buckets[slot%breakerBuckets]
	if b.slot != slot {
		b.slot, b.ok, b.failed = slot, 0, 0
	}
	if failed {
		b.failed++
	} else {
		b.ok++
	}
}

func (w *outcomeWindow) counts(now time.Time) (ok, failed uint32) {
	slot := now.UnixNano() / int64(breakerBucket)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.buckets {
		if b.slot > slot-breakerBuckets && b.slot <= slot {
			ok += b.ok
			failed += b.failed
		}
	}
	return ok, failed
}

func (w *outcomeWindow) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range w.buckets {
		w.buckets[i].ok, w.buckets[i].failed = 0, 0
	}
}

func newFCMBreaker(cfg FCMSenderConfig, log *slog.Logger) *fcmBreaker {
	b := &fcmBreaker{ramp: newRamp(cfg.RampMax), tel: cfg.Telemetry, pushes: map[*pushState]struct{}{}}
	failures := cfg.BreakerFailures
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "fcm",
		MaxRequests: cfg.BreakerProbes,
		Timeout:     cfg.BreakerOpenFor,
		// Consecutive failures catch an outage at low traffic; the ratio
		// over the last second catches it at high traffic, where answers
		// to requests sent before it began still come back as successes
		// among the failures. The window is ours, by completion time:
		// gobreaker's own rolling window files an outcome under the time
		// its request started and drops it once that is out of the window,
		// so a timeout longer than the window would never count.
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if c.ConsecutiveFailures >= failures {
				return true
			}
			ok, failed := b.window.counts(time.Now())
			return failed >= failures && failed >= ok
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errAttemptExcluded) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			// Runs under the breaker's lock: must not call back into it.
			b.window.reset()
			if to == gobreaker.StateOpen {
				// Stop the pushes in flight (those waiting between the
				// SDK's retries at once, those on the wire once FCM has
				// answered them, unless it accepted them): their retries
				// would reach a failing FCM. The probes and what follows
				// them start again from one request: a recovering FCM gets
				// a ramp, not every worker at once.
				b.stopPushes()
				b.ramp.restart()
			}
			level := slog.LevelWarn
			if to == gobreaker.StateClosed {
				level = slog.LevelInfo
			}
			attrs := []any{"from", from.String(), "to", to.String()}
			if last := b.lastFailure.Load(); to == gobreaker.StateOpen && last != nil {
				attrs = append(attrs, "last_failure", *last)
			}
			log.Log(context.Background(), level, "fcm circuit breaker changed state", attrs...)
			cfg.Telemetry.BreakerChanged(from.String(), to.String())
		},
	})
	return b
}

// track adds ps to the pushes stopped when the breaker next opens, until
// untrack.
func (b *fcmBreaker) track(ps *pushState) {
	b.pushesMu.Lock()
	defer b.pushesMu.Unlock()
	b.pushes[ps] = struct{}{}
}

func (b *fcmBreaker) untrack(ps *pushState) {
	b.pushesMu.Lock()
	defer b.pushesMu.Unlock()
	delete(b.pushes, ps)
}

// stopPushes stops every push under way (see pushState.stopForBreaker). It
// runs under gobreaker's lock: stopping a push only cancels its context,
// and never calls back into the breaker.
func (b *fcmBreaker) stopPushes() {
	b.pushesMu.Lock()
	defer b.pushesMu.Unlock()
	for ps := range b.pushes {
		ps.stopForBreaker()
	}
}

// ramp bounds the requests in flight. At a cold start it lets one out
// until an attempt succeeds, then stops bounding. Each time the breaker
// opens it starts over, and then doubles instead: one until an attempt
// succeeds, then twice as many each time as many successes as the bound
// have come back, until the bound reaches max and the ramp stops bounding.
//
// The first bound of one keeps a cold burst on one connection: Go cannot
// know a new host speaks HTTP/2 before the TLS handshake, so N concurrent
// first requests dial N connections (measured: 143 for 128 pushes). Once
// one attempt has succeeded the connection is there and every request
// shares it, so a cold start goes to full speed at once: doubling from one
// at FCM's round trip spent 7 round trips (140 ms at 20 ms, ~800 pushes of
// a 128-wide sender) below speed for nothing. After an outage the doubling
// keeps a recovering FCM from meeting every worker at once. Only attempts
// let out since the ramp last started over count as its successes: the
// answers of requests sent before an opening say nothing of the recovery.
type ramp struct {
	max int

	mu        sync.Mutex
	limit     int  // 0: no bound
	recovery  bool // doubling after the breaker opened, not a cold start
	starts    int  // how many times it started over
	inFlight  int
	successes int
	changed   chan struct{} // closed and replaced when a slot may have freed
}

func newRamp(max int) *ramp {
	return &ramp{max: max, limit: 1, changed: make(chan struct{})}
}

// acquire takes a slot, and returns which start of the ramp it belongs to,
// for release.
func (r *ramp) acquire(ctx context.Context) (start int, err error) {
	for {
		r.mu.Lock()
		if r.limit == 0 || r.inFlight < r.limit {
			r.inFlight++
			start = r.starts
			r.mu.Unlock()
			return start, nil
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

// release gives back a slot acquire took during start.
func (r *ramp) release(start int, success bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	success = success && start == r.starts
	if r.limit == 0 {
		// Nobody waits without a bound (acquire waits only under one, and
		// the step to none woke every waiter): nothing to signal, and each
		// attempt spares a channel.
		return
	}
	if success {
		r.successes++
		if r.successes >= r.limit {
			r.successes = 0
			r.limit *= 2
			if r.limit >= r.max || !r.recovery {
				r.limit = 0
			}
		}
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *ramp) restart() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.limit, r.successes, r.recovery = 1, 0, true
	r.starts++
	close(r.changed)
	r.changed = make(chan struct{})
}
