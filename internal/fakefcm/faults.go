package fakefcm

import (
	"maps"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// FaultCode selects the answer a scripted Fault makes the fake give. Each code reproduces the
// HTTP status and error body real FCM sends, so the firebase SDK's error helpers classify it
// as they would in production.
type FaultCode int

const (
	// FaultNone accepts the message. With Fault.Latency it only slows matching requests down.
	FaultNone FaultCode = iota
	// FaultUnregistered answers 404 NOT_FOUND with FcmError UNREGISTERED: the token is dead.
	FaultUnregistered
	// FaultInvalidToken answers 400 INVALID_ARGUMENT about the token ("The registration token
	// is not a valid FCM registration token"), with FcmError INVALID_ARGUMENT and a
	// google.rpc.BadRequest field violation on message.token.
	FaultInvalidToken
	// FaultInvalidMessage answers 400 INVALID_ARGUMENT about the message ("Invalid JSON
	// payload received..."), with FcmError INVALID_ARGUMENT and a field violation on
	// message.data.
	FaultInvalidMessage
	// FaultQuotaExceeded answers 429 RESOURCE_EXHAUSTED with FcmError QUOTA_EXCEEDED, and a
	// Retry-After header when Fault.RetryAfter > 0. The SDK does not retry it.
	FaultQuotaExceeded
	// FaultUnavailable answers 503 UNAVAILABLE with FcmError UNAVAILABLE, and a Retry-After
	// header when Fault.RetryAfter > 0. The SDK retries it up to 4 times (waits 0, 1, 2, 4 s,
	// or Retry-After), and does not retry at all when Retry-After exceeds 2 minutes.
	FaultUnavailable
	// FaultInternal answers 500 INTERNAL with FcmError INTERNAL.
	FaultInternal
	// FaultSenderIDMismatch answers 403 PERMISSION_DENIED with FcmError SENDER_ID_MISMATCH:
	// the token belongs to another Firebase project.
	FaultSenderIDMismatch
	// FaultThirdPartyAuth answers 401 UNAUTHENTICATED with FcmError THIRD_PARTY_AUTH_ERROR:
	// APNs or web push credentials were rejected.
	FaultThirdPartyAuth
	// FaultUnauthenticated answers 401 UNAUTHENTICATED with no FcmError detail: the sender's
	// own OAuth credentials were rejected.
	FaultUnauthenticated
	// FaultHang never answers: the request blocks until the client's context ends or the
	// fake is closed (then it gets 503 UNAVAILABLE).
	FaultHang
	// FaultBadRequest answers 400 INVALID_ARGUMENT with a plain Google error body and no
	// FcmError detail, as Google's front end does for a request it cannot parse.
	FaultBadRequest
)

// String returns the constant's name, for test case names and logs.
func (c FaultCode) String() string {
	switch c {
	case FaultNone:
		return "FaultNone"
	case FaultUnregistered:
		return "FaultUnregistered"
	case FaultInvalidToken:
		return "FaultInvalidToken"
	case FaultInvalidMessage:
		return "FaultInvalidMessage"
	case FaultQuotaExceeded:
		return "FaultQuotaExceeded"
	case FaultUnavailable:
		return "FaultUnavailable"
	case FaultInternal:
		return "FaultInternal"
	case FaultSenderIDMismatch:
		return "FaultSenderIDMismatch"
	case FaultThirdPartyAuth:
		return "FaultThirdPartyAuth"
	case FaultUnauthenticated:
		return "FaultUnauthenticated"
	case FaultBadRequest:
		return "FaultBadRequest"
	case FaultHang:
		return "FaultHang"
	default:
		return "FaultCode(" + strconv.Itoa(int(c)) + ")"
	}
}

// Fault scripts how the fake answers matching requests. Register it with FailToken or FailAll.
type Fault struct {
	// Code is the answer to give.
	Code FaultCode
	// RetryAfter, when positive, is sent as a Retry-After header in whole seconds, rounded
	// up, on FaultQuotaExceeded and FaultUnavailable answers. Other codes ignore it.
	RetryAfter time.Duration
	// Times is how many matching requests the fault applies to; once used up, requests are
	// treated as if the fault had never been set. Zero or negative means until cleared.
	Times int
	// Latency is extra delay for matching requests, on top of the fake's latency.
	Latency time.Duration
	// Every, when above 1, applies the fault to one matching request in Every (the Every-th,
	// the 2×Every-th, ...), as an FCM failing a share of requests does; the others are
	// answered as if the fault were not set. Times counts only the requests it applies to.
	Every int
}

// FailToken scripts fault for requests whose message.token equals token, replacing any fault
// already set for that token. A token fault takes precedence over FailAll; once its Times
// are used up, FailAll applies again.
func (f *Server) FailToken(token string, fault Fault) {
	f.updateFaults(func(t *faultTable) {
		if t.byToken == nil {
			t.byToken = make(map[string]*activeFault)
		}
		t.byToken[token] = newActiveFault(fault)
	})
}

// FailAll scripts fault for every request, replacing the previous FailAll fault. Faults set
// with FailToken take precedence.
func (f *Server) FailAll(fault Fault) {
	f.updateFaults(func(t *faultTable) { t.all = newActiveFault(fault) })
}

// ClearFaults removes every fault set with FailToken and FailAll. The latency is kept.
func (f *Server) ClearFaults() {
	f.faultMu.Lock()
	f.faults.Store(nil)
	f.faultMu.Unlock()
}

// faultTable is an immutable snapshot of the scripted faults. Writers copy it and swap the
// pointer, so a request reads it with one atomic load and no lock. Only the remaining-uses
// counters inside change, atomically.
type faultTable struct {
	all     *activeFault
	byToken map[string]*activeFault
}

type activeFault struct {
	Fault
	remaining atomic.Int64 // uses left when Times > 0
	seen      atomic.Int64 // matching requests so far, when Every > 1
}

func newActiveFault(fault Fault) *activeFault {
	a := &activeFault{Fault: fault}
	a.remaining.Store(int64(fault.Times))
	return a
}

// take reports whether the fault applies to one more request, using one of its Times.
func (a *activeFault) take() bool {
	if a == nil {
		return false
	}
	if a.Every > 1 && a.seen.Add(1)%int64(a.Every) != 0 {
		return false
	}
	if a.Times <= 0 {
		return true
	}
	for {
		n := a.remaining.Load()
		if n <= 0 {
			return false
		}
		if a.remaining.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (f *Server) updateFaults(change func(*faultTable)) {
	f.faultMu.Lock()
	defer f.faultMu.Unlock()
	next := &faultTable{}
	if cur := f.faults.Load(); cur != nil {
		next.all = cur.all
		next.byToken = maps.Clone(cur.byToken)
	}
	change(next)
	f.faults.Store(next)
}

// faultFor returns the fault that applies to a request for token, consuming one of its Times.
// ok is false when none applies.
func (f *Server) faultFor(token string) (fault Fault, ok bool) {
	t := f.faults.Load()
	if t == nil {
		return Fault{}, false
	}
	if token != "" {
		if a := t.byToken[token]; a.take() {
			return a.Fault, true
		}
	}
	if a := t.all; a.take() {
		return a.Fault, true
	}
	return Fault{}, false
}

// faultAnswer is the precomputed response for a FaultCode.
type faultAnswer struct {
	status int
	body   []byte
	// retryAfter says whether Fault.RetryAfter is sent as a header.
	retryAfter bool
	// wwwAuthenticate is sent on 401s, as Google's front end does.
	wwwAuthenticate bool
}

var faultAnswers = map[FaultCode]faultAnswer{
	FaultUnregistered: {
		status: http.StatusNotFound,
		body:   fcmErrorBody(http.StatusNotFound, "Requested entity was not found.", "NOT_FOUND", "UNREGISTERED"),
	},
	FaultInvalidToken: {
		status: http.StatusBadRequest,
		body: fcmErrorBody(http.StatusBadRequest,
			"The registration token is not a valid FCM registration token", "INVALID_ARGUMENT", "INVALID_ARGUMENT",
			fieldViolation{Field: "message.token", Description: "Invalid registration token"}),
	},
	FaultInvalidMessage: {
		status: http.StatusBadRequest,
		body: fcmErrorBody(http.StatusBadRequest,
			`Invalid JSON payload received. Unknown name "nope" at 'message.data': Cannot find field.`,
			"INVALID_ARGUMENT", "INVALID_ARGUMENT",
			fieldViolation{Field: "message.data", Description: `Invalid JSON payload received. Unknown name "nope" at 'message.data': Cannot find field.`}),
	},
	FaultQuotaExceeded: {
		status:     http.StatusTooManyRequests,
		body:       fcmErrorBody(http.StatusTooManyRequests, "Quota exceeded for sending messages.", "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
		retryAfter: true,
	},
	FaultUnavailable: {
		status:     http.StatusServiceUnavailable,
		body:       fcmErrorBody(http.StatusServiceUnavailable, "The service is currently unavailable.", "UNAVAILABLE", "UNAVAILABLE"),
		retryAfter: true,
	},
	FaultInternal: {
		status: http.StatusInternalServerError,
		body:   fcmErrorBody(http.StatusInternalServerError, "Internal error encountered.", "INTERNAL", "INTERNAL"),
	},
	FaultSenderIDMismatch: {
		status: http.StatusForbidden,
		body:   fcmErrorBody(http.StatusForbidden, "SenderId mismatch", "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
	},
	FaultBadRequest: {
		status: http.StatusBadRequest,
		body:   googleErrorBody(http.StatusBadRequest, "Request contains an invalid argument.", "INVALID_ARGUMENT"),
	},
	FaultThirdPartyAuth: {
		status: http.StatusUnauthorized,
		body: fcmErrorBody(http.StatusUnauthorized, "Auth error from APNS or Web Push Service",
			"UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
	},
	FaultUnauthenticated: {
		status: http.StatusUnauthorized,
		body: fcmErrorBody(http.StatusUnauthorized,
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
			"UNAUTHENTICATED", ""),
		wwwAuthenticate: true,
	},
}

// retryAfterSeconds renders d as a Retry-After value: whole seconds, rounded up.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}
