package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"github.com/sony/gobreaker/v2"

	"github.com/herald-push/herald/internal/settings"
	"github.com/herald-push/herald/internal/telemetry"
	"github.com/herald-push/herald/notification"
)

// FCMSenderConfig configures an FCMSender. Zero values mean defaults. Each
// setting is documented, with its default, on herald.FCMConfig, which hosts
// set.
type FCMSenderConfig struct {
	SendTimeout     time.Duration
	BreakerFailures uint32
	BreakerOpenFor  time.Duration
	BreakerProbes   uint32
	RampMax         int
	// Logger receives breaker state changes. Defaults to discarding.
	Logger *slog.Logger
	// Telemetry counts breaker state changes. Defaults to nil, which
	// observes nothing.
	Telemetry *telemetry.Telemetry
}

func (c *FCMSenderConfig) setDefaults() {
	settings.Default(&c.SendTimeout, 20*time.Second)
	settings.Default(&c.BreakerFailures, 5)
	settings.Default(&c.BreakerOpenFor, 10*time.Second)
	settings.Default(&c.BreakerProbes, 3)
	settings.Default(&c.RampMax, 256)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every invalid field at once, in field order.
func (c FCMSenderConfig) Validate() error {
	return errors.Join(
		settings.NotNegative("SendTimeout", c.SendTimeout),
		settings.NotNegative("BreakerOpenFor", c.BreakerOpenFor),
		settings.NotNegative("RampMax", c.RampMax),
	)
}

// FCMSender pushes messages with the firebase messaging client, one HTTP v1
// request each, and classifies FCM's answers into *notification.SendError.
// Its circuit breaker lives in the client's transport and judges every HTTP
// attempt (see herald.FCMConfig.BreakerFailures). It implements app.Pusher
// and is safe for concurrent use.
type FCMSender struct {
	client  *messaging.Client
	cfg     FCMSenderConfig
	breaker *fcmBreaker
}

// NewFCMSender returns a sender on client, and installs its circuit breaker
// in client's transport. client must not be nil; it serves this sender
// only: a client already serving another sender is an error.
func NewFCMSender(client *FCMClient, cfg FCMSenderConfig) (*FCMSender, error) {
	if client == nil {
		panic("adapters: NewFCMSender: nil client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid fcm sender config: %w", err)
	}
	if !client.used.CompareAndSwap(false, true) {
		return nil, errClientInUse
	}
	cfg.setDefaults()
	b := newFCMBreaker(cfg, cfg.Logger.With("component", "herald_fcm"))
	client.transport.breaker.Store(b)
	return &FCMSender{client: client.messaging, cfg: cfg, breaker: b}, nil
}

// PushTimeout implements app.TimedPusher: a push ends within SendTimeout.
func (s *FCMSender) PushTimeout() time.Duration { return s.cfg.SendTimeout }

// StrainedAttempts implements app.StrainCounter: the HTTP attempts FCM
// answered with a 5xx so far, the SDK's own retries included.
func (s *FCMSender) StrainedAttempts() int64 { return s.breaker.strained.Load() }

// BreakerState returns the circuit breaker's state: "closed", "half-open"
// or "open".
func (s *FCMSender) BreakerState() string { return s.breaker.cb.State().String() }

// Push implements app.Pusher: it sends msg within SendTimeout and returns
// FCM's message name, or a *notification.SendError. When the breaker is
// open it returns notification.ErrCircuitOpen without a request; when the
// breaker opens while the push is in flight, the push is cancelled (the
// SDK's retries with it) and also returns ErrCircuitOpen. A push whose
// ctx ends, or that got no request out before its deadline, returns
// notification.ErrPushCancelled. A push that ends in its deadline while
// the SDK waits out a 503's Retry-After carries that Retry-After. A push
// FCM accepted (a 2xx) is sent, even if the answer's body could not be read:
// its name is then "".
func (s *FCMSender) Push(ctx context.Context, msg notification.Message) (string, error) {
	if s.breaker.cb.State() == gobreaker.StateOpen {
		return "", &notification.SendError{Class: notification.ErrCircuitOpen, Reason: gobreaker.ErrOpenState.Error()}
	}
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ctx, cancelTimeout := context.WithTimeout(ctx, s.cfg.SendTimeout)
	defer cancelTimeout()
	ps := &pushState{cancel: cancel}
	ctx = context.WithValue(ctx, pushStateKey{}, ps)
	s.breaker.track(ps)
	defer s.breaker.untrack(ps)

	name, err := s.client.Send(ctx, fcmMessage(msg, time.Now()))
	if err == nil || ps.wasAccepted() {
		// FCM accepted it, even if its answer's body was then cut short,
		// unreadable or late: the push is sent, and a retry would reach
		// the device twice.
		return name, nil
	}
	return "", classifyPushError(parent, ctx, ps, err)
}

// classifyPushError classifies a failed push, telling Herald's own
// cancellations and deadlines apart from FCM's answers.
func classifyPushError(parent, ctx context.Context, ps *pushState, err error) *notification.SendError {
	sent, retryAfter := ps.snapshot()
	if errorutils.HTTPResponse(err) == nil && ctx.Err() != nil {
		// The push ended without a final answer from FCM.
		switch {
		case errors.Is(context.Cause(ctx), errBreakerOpened):
			return &notification.SendError{Class: notification.ErrCircuitOpen, Code: "CANCELLED",
				Reason: "breaker opened", Err: err}
		case parent.Err() != nil && !errors.Is(parent.Err(), context.DeadlineExceeded):
			return &notification.SendError{Class: notification.ErrPushCancelled, Code: "CANCELLED",
				Reason: "cancelled by the caller", Err: err}
		case sent == 0:
			return &notification.SendError{Class: notification.ErrPushCancelled, Code: "NOT_SENT",
				Reason: "no request got out before the deadline", Err: err}
		case retryAfter > 0:
			// The SDK was waiting out a 503's Retry-After when the deadline came.
			return &notification.SendError{Class: notification.ErrProviderUnavailable, Code: "UNAVAILABLE",
				Reason: "deadline reached while waiting out Retry-After", RetryAfter: retryAfter,
				CountsAgainstProvider: true, Err: err}
		}
	}
	var unaddressable *url.Error
	if sent == 0 && ctx.Err() == nil && !errors.As(err, &unaddressable) {
		// No request reached the transport, and nothing stopped the push:
		// the SDK refused the message itself before sending it (its own
		// checks of the options, or its JSON encoding), as FCM would have
		// refused it, and will again. A row written around Herald, or
		// options an older SDK took, get here. Failing it is the message's
		// fault only: the HTTP client's own errors before a request (an
		// endpoint it cannot address, the same for every push) are
		// *url.Error, and go on to be classified as a provider failure.
		return &notification.SendError{Class: notification.ErrMessageRejected, Code: "SDK_REJECTED", NoRequest: true,
			Reason: "refused by the firebase sdk before sending: " + firstLine(err.Error()), Err: err}
	}
	se := classifyFCMError(err)
	if se.RetryAfter == 0 && errors.Is(se.Class, notification.ErrProviderUnavailable) {
		se.RetryAfter = retryAfter
	}
	return se
}

// classifyFCMError turns an error from the firebase messaging client into a
// *notification.SendError. It must see the SDK's error unwrapped: the SDK's
// helpers use type assertions, not errors.As. The messaging.Is* helpers are
// checked before errorutils.*, because THIRD_PARTY_AUTH_ERROR also reads as
// UNAUTHENTICATED and SENDER_ID_MISMATCH as PERMISSION_DENIED.
func classifyFCMError(err error) *notification.SendError {
	se := &notification.SendError{Err: err, Reason: firstLine(err.Error())}
	switch {
	case messaging.IsUnregistered(err):
		se.Class, se.Code = notification.ErrTokenUnregistered, "UNREGISTERED"
	case messaging.IsSenderIDMismatch(err):
		// One token of another Firebase project: prune it, raise an alarm.
		se.Class, se.Code = notification.ErrSenderMismatch, "SENDER_ID_MISMATCH"
	case messaging.IsThirdPartyAuthError(err):
		// APNs or web push credentials: one platform is affected, not FCM,
		// so it does not count against the breaker.
		se.Class, se.Code = notification.ErrPlatformAuthRejected, "THIRD_PARTY_AUTH_ERROR"
	case messaging.IsQuotaExceeded(err):
		// The project's quota or one device's rate: the SDK does not say
		// which; the sender tells them apart across answers.
		se.Class, se.Code = notification.ErrQuotaExceeded, "QUOTA_EXCEEDED"
		se.RetryAfter = retryAfter(err)
	case messaging.IsInvalidArgument(err):
		se.Code = "INVALID_ARGUMENT"
		se.Class = notification.ErrMessageRejected
		if invalidTokenArgument(err) {
			se.Class = notification.ErrTokenRejected
		}
	case messaging.IsUnavailable(err):
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrProviderUnavailable, "UNAVAILABLE", true
		se.RetryAfter = retryAfter(err)
	case messaging.IsInternal(err):
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrProviderUnavailable, "INTERNAL", true
	case errorutils.IsResourceExhausted(err):
		se.Class, se.Code = notification.ErrQuotaExceeded, "RESOURCE_EXHAUSTED"
		se.RetryAfter = retryAfter(err)
	case errorutils.IsUnauthenticated(err):
		// Our own credentials were rejected: no push can succeed, so it is
		// a provider-wide failure as well as an alarm, and never this
		// delivery's fault.
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrCredentialsRejected, "UNAUTHENTICATED", true
	case errorutils.IsPermissionDenied(err):
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrCredentialsRejected, "PERMISSION_DENIED", true
	case errorutils.IsNotFound(err):
		// NOT_FOUND without UNREGISTERED: the project or endpoint is wrong.
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrCredentialsRejected, "NOT_FOUND", true
	case errorutils.IsInvalidArgument(err), httpStatus(err) == http.StatusBadRequest:
		// A 400 without an FCM error detail: FCM refused this request as
		// it is, and would refuse it again.
		se.Class, se.Code = notification.ErrMessageRejected, "INVALID_ARGUMENT"
	case errorutils.IsAborted(err), errorutils.IsConflict(err), httpStatus(err) == http.StatusConflict:
		// A 409 (ABORTED: a concurrency conflict at Google's end) asks for
		// the request to be tried again; it says nothing against the
		// message, and FCM answered (the breaker counts it working).
		se.Class, se.Code = notification.ErrProviderUnavailable, "ABORTED"
		se.RetryAfter = retryAfter(err)
	case foreignStatus(httpStatus(err)):
		// A 4xx FCM's send never answers (405, 410, 415...): a proxy or a
		// wrong endpoint, which would answer every push alike. Nothing is
		// wrong with the delivery: released, like our credentials refused,
		// and a failure to the breaker, which stops the pushes.
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrCredentialsRejected, "HTTP_"+strconv.Itoa(httpStatus(err)), true
	case permanentHTTPStatus(httpStatus(err)):
		// Another 4xx verdict on the request itself (413 too large...).
		se.Class, se.Code = notification.ErrMessageRejected, "HTTP_"+strconv.Itoa(httpStatus(err))
	case errors.Is(err, context.Canceled):
		// Cancelled by Herald (shutdown) or its caller: says nothing
		// about FCM and is not an attempt.
		se.Class, se.Code = notification.ErrPushCancelled, "CANCELLED"
	case errors.Is(err, context.DeadlineExceeded), errorutils.IsDeadlineExceeded(err):
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrProviderUnavailable, "DEADLINE_EXCEEDED", true
	default:
		// Network errors and anything unknown: assume FCM is in trouble.
		se.Class, se.CountsAgainstProvider = notification.ErrProviderUnavailable, true
	}
	return se
}

// invalidTokenFCMMessage is FCM's message, whole, for a registration token it
// does not know: real FCM sends it with no field violation.
const invalidTokenFCMMessage = "The registration token is not a valid FCM registration token"

// invalidTokenArgument reports whether an INVALID_ARGUMENT error is about
// the registration token rather than the message: FCM names the field
// "message.token" in a BadRequest detail, or answers its own message for an
// invalid token, whole. Nothing less will do: the token is then deleted for
// good, and a message refused for words that merely mention "registration
// token" (a field, a target) would take a valid token, and every later push
// to its device, with it.
func invalidTokenArgument(err error) bool {
	message := err.Error()
	if resp := errorutils.HTTPResponse(err); resp != nil && resp.Body != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var parsed struct {
			Error struct {
				Message string `json:"message"`
				Details []struct {
					FieldViolations []struct {
						Field string `json:"field"`
					} `json:"fieldViolations"`
				} `json:"details"`
			} `json:"error"`
		}
		if json.Unmarshal(body, &parsed) == nil {
			for _, d := range parsed.Error.Details {
				for _, v := range d.FieldViolations {
					if v.Field == "message.token" {
						return true
					}
				}
			}
			message = parsed.Error.Message
		}
	}
	return strings.EqualFold(strings.TrimSuffix(strings.TrimSpace(message), "."), invalidTokenFCMMessage)
}

// httpStatus returns the HTTP status of the response behind err, or 0.
func httpStatus(err error) int {
	if resp := errorutils.HTTPResponse(err); resp != nil {
		return resp.StatusCode
	}
	return 0
}

// foreignStatus reports whether an HTTP status is a 4xx that FCM's send
// does not answer: Google's front end gives 400, 401, 403, 404, 408, 409,
// 413 and 429. Any other comes from something between us and FCM.
func foreignStatus(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound,
		http.StatusRequestTimeout, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return false
	}
	return status >= 400 && status < 500
}

// permanentHTTPStatus reports whether an HTTP status is a verdict on the
// request that a retry would get again: a 4xx other than 401, 403 and 404
// (credentials or project, classified before), 408, 409 and 429.
func permanentHTTPStatus(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound,
		http.StatusRequestTimeout, http.StatusConflict, http.StatusTooManyRequests:
		return false
	}
	return status >= 400 && status < 500
}

// maxRetryAfter caps a Retry-After: a hostile or broken answer must not
// park a delivery for years (or overflow a time.Duration).
const maxRetryAfter = 24 * time.Hour

// retryAfter reads the Retry-After header (seconds or an HTTP date) of the
// response behind err, or returns zero.
func retryAfter(err error) time.Duration {
	resp := errorutils.HTTPResponse(err)
	if resp == nil {
		return 0
	}
	return parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && secs > 0 {
		return min(time.Duration(min(secs, int64(maxRetryAfter/time.Second)))*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// maxPushReasonLength bounds the reason of a push's error, in bytes: the sender
// logs it (its alarms quote it) and stores it, and FCM's message, or a
// proxy's page, can be tens of kilobytes on one line.
const maxPushReasonLength = 300

// firstLine is the first line of an error's text, cut to
// maxPushReasonLength bytes on a character boundary.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	if len(line) <= maxPushReasonLength {
		return line
	}
	n := maxPushReasonLength - len("...")
	for n > 0 && !utf8.RuneStart(line[n]) {
		n--
	}
	return line[:n] + "..."
}
