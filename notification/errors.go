package notification

import (
	"errors"
	"fmt"
	"time"
)

// Validation errors. A rejected notification or token returns a *FieldError
// (several joined with errors.Join) that wraps one of these, so callers can
// test with errors.Is.
var (
	// ErrRequired reports an empty field that must be set.
	ErrRequired = errors.New("required")
	// ErrTooLong reports a field longer than Herald accepts.
	ErrTooLong = errors.New("too long")
	// ErrInvalidUTF8 reports text that is not valid UTF-8 or contains a NUL byte.
	ErrInvalidUTF8 = errors.New("not valid utf-8 text")
	// ErrReservedDataKey reports a data key FCM reserves ("from",
	// "notification", "message_type", or a "google"/"gcm" prefix).
	ErrReservedDataKey = errors.New("reserved data key")
	// ErrPayloadTooLarge reports a payload over FCM's 4096-byte limit. The
	// error is a *PayloadTooLargeError carrying the sizes.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrTTLOutOfRange reports a time to live outside FCM's 0 to 28 days.
	ErrTTLOutOfRange = errors.New("ttl out of range")
	// ErrInvalidToken reports a device token that cannot be an FCM token.
	ErrInvalidToken = errors.New("invalid device token")
	// ErrUnknownPlatform reports a platform other than the Platform constants.
	ErrUnknownPlatform = errors.New("unknown platform")
	// ErrRecipientAndBroadcast reports a draft with both a recipient and a
	// broadcast audience.
	ErrRecipientAndBroadcast = errors.New("a broadcast has no single recipient")
	// ErrInvalidValue reports an option outside the values it accepts (an
	// Android priority, an interruption level, a negative badge, an
	// idempotency window out of range).
	ErrInvalidValue = errors.New("not an accepted value")
	// ErrInvalidURL reports an image or link that is not an absolute https
	// URL, which FCM requires.
	ErrInvalidURL = errors.New("not an absolute https url")
	// ErrExpiresTooEarly reports an ExpiresAt not after SendAt, or one the
	// database's clock says has passed: it could never be pushed.
	ErrExpiresTooEarly = errors.New("expires before it could be sent")
)

// FieldError says which field of a notification, token or event failed
// validation and why. Err is one of the validation sentinels above.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the sentinel, so errors.Is(err, ErrRequired) works.
func (e *FieldError) Unwrap() error { return e.Err }

// PayloadTooLargeError reports a notification whose FCM payload would exceed
// the limit. It matches ErrPayloadTooLarge with errors.Is.
type PayloadTooLargeError struct {
	Size  int
	Limit int
}

func (e *PayloadTooLargeError) Error() string {
	return fmt.Sprintf("payload too large: %d bytes, limit %d", e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrPayloadTooLarge) true.
func (e *PayloadTooLargeError) Is(target error) bool { return target == ErrPayloadTooLarge }

// Event errors.
var (
	// ErrUnknownEvent reports an event type no rule is registered for.
	ErrUnknownEvent = errors.New("unknown event type")
	// ErrMalformedEvent reports an event or outbox message that cannot be decoded.
	ErrMalformedEvent = errors.New("malformed event")
	// ErrDuplicateRule reports a second rule registered for one event type.
	ErrDuplicateRule = errors.New("rule already registered for event type")
)

// Delivery state errors.
var (
	// ErrInvalidTransition reports a delivery state change its state does not allow.
	ErrInvalidTransition = errors.New("invalid delivery transition")
	// ErrNotFound reports a notification, token or delivery that does not exist
	// (or does not belong to the user asking).
	ErrNotFound = errors.New("not found")
)

// Send outcome classes. Every failed push is a *SendError whose Class is one
// of these; the sender decides what happens next from the class alone.
var (
	// ErrTokenUnregistered: FCM says the token expired or the app was removed
	// (UNREGISTERED). The token is pruned.
	ErrTokenUnregistered = errors.New("token unregistered")
	// ErrTokenRejected: FCM says the token is not a valid registration token
	// (INVALID_ARGUMENT about the token). The token is pruned.
	ErrTokenRejected = errors.New("token rejected")
	// ErrMessageRejected: FCM rejected the message itself (INVALID_ARGUMENT
	// about the message), or the provider's client refused to send it. The
	// delivery fails and is never retried.
	ErrMessageRejected = errors.New("message rejected")
	// ErrQuotaExceeded: FCM throttled us (QUOTA_EXCEEDED, HTTP 429). Retried no
	// sooner than Retry-After, and all sending slows down.
	ErrQuotaExceeded = errors.New("quota exceeded")
	// ErrProviderUnavailable: FCM failed or did not answer in time (UNAVAILABLE,
	// INTERNAL, a timeout, a network error). Retried with backoff; counts
	// against the circuit breaker.
	ErrProviderUnavailable = errors.New("provider unavailable")
	// ErrMisconfigured: FCM refused our configuration, and the sender raises
	// the configuration alarm. Its cases decide what happens to the
	// delivery: ErrSenderMismatch prunes the token, ErrPlatformAuthRejected
	// retries it while that platform pauses, ErrCredentialsRejected
	// releases it with no attempt counted. Any other ErrMisconfigured fails
	// the delivery.
	ErrMisconfigured = errors.New("provider configuration rejected")
	// ErrCircuitOpen: the circuit breaker is open, so the push was not
	// attempted, or it opened while the push was in flight and cancelled
	// it. No attempt is counted; the delivery is released, due again after
	// the retry policy's base delay.
	ErrCircuitOpen = errors.New("circuit breaker open")
	// ErrCredentialsRejected: FCM rejected our own credentials or project
	// (UNAUTHENTICATED, PERMISSION_DENIED without SENDER_ID_MISMATCH,
	// NOT_FOUND without UNREGISTERED). No push can succeed until the
	// credentials work again, and nothing is wrong with this delivery: it
	// counts against the circuit breaker, raises the configuration alarm
	// (errors.Is(ErrCredentialsRejected, ErrMisconfigured) is true), and the
	// delivery is released without an attempt counted, never failed for
	// good.
	ErrCredentialsRejected error = &subclassError{msg: "provider rejected our credentials", parent: ErrMisconfigured}
	// ErrPushCancelled: Herald itself stopped the push before FCM gave a
	// verdict: the caller's context ended (shutdown), or no request got out
	// before the push's deadline. It says nothing about FCM: no attempt is
	// counted and the delivery is released, due at once.
	ErrPushCancelled = errors.New("push cancelled")
)

// Configuration alarms that concern one token or one platform rather than
// every push. Each also matches ErrMisconfigured with errors.Is, so code that
// raises an alarm on ErrMisconfigured still does; RecordFailure checks them
// first.
var (
	// ErrSenderMismatch: the token belongs to another Firebase project
	// (SENDER_ID_MISMATCH). It can never work here: the token is pruned,
	// and the sender raises a configuration alarm (an app build may ship
	// another project's configuration).
	ErrSenderMismatch = fmt.Errorf("%w: token of another firebase project", ErrMisconfigured)
	// ErrPlatformAuthRejected: APNs or web push refused the credentials
	// uploaded to Firebase (THIRD_PARTY_AUTH_ERROR), for example an expired
	// APNs key. The push may work once an operator fixes the key, so the
	// delivery is retried like a transient failure (its attempt counted);
	// the sender raises an alarm and pauses that platform's pushes.
	ErrPlatformAuthRejected = fmt.Errorf("%w: apns or web push credentials", ErrMisconfigured)
)

// subclassError is a send class that is also a case of a broader class.
type subclassError struct {
	msg    string
	parent error
}

func (e *subclassError) Error() string { return e.msg }

// Unwrap returns the broader class.
func (e *subclassError) Unwrap() error { return e.parent }

// CountsAsAttempt reports whether a failed push counts as an attempt of its
// delivery. Pushes the breaker stopped, pushes Herald cancelled, and pushes
// refused for our own credentials do not: they are released, never failed.
func CountsAsAttempt(err error) bool {
	return !errors.Is(err, ErrCircuitOpen) && !errors.Is(err, ErrPushCancelled) && !errors.Is(err, ErrCredentialsRejected)
}

// SendError is what a failed push returns. Class is one of the send outcome
// sentinels above; Code is the provider's own error code (for example
// "UNREGISTERED"); RetryAfter is the provider's Retry-After, or zero.
type SendError struct {
	Class      error
	Code       string
	Reason     string
	RetryAfter time.Duration
	// CountsAgainstProvider is true for failures that say the provider, not
	// this token or message, is in trouble: 5xx, timeouts, network errors,
	// and our own credentials rejected. The FCM adapter's circuit breaker
	// judges each HTTP attempt by the same rule.
	CountsAgainstProvider bool
	// NoRequest is true when the provider was never asked: its client
	// refused the message before any request. Such a failure takes
	// microseconds and says nothing about the provider's round trip.
	NoRequest bool
	// Err is the underlying error, if any.
	Err error
}

func (e *SendError) Error() string {
	msg := e.Class.Error()
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Unwrap returns the class and the underlying error.
func (e *SendError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Class}
	}
	return []error{e.Class, e.Err}
}
