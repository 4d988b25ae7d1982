package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"github.com/sony/gobreaker/v2"

	"github.com/herald-push/herald/notification"
)

// FCMSenderConfig configures an FCMSender. Zero values mean the documented
// defaults.
type FCMSenderConfig struct {
	// SendTimeout is the deadline of one push, the SDK's own retries
	// included (the SDK's http.Client has none). Defaults to 20s.
	SendTimeout time.Duration
	// BreakerFailures is how many consecutive provider-wide failures (5xx,
	// timeouts, network errors, our credentials rejected) open the circuit
	// breaker. Per-token verdicts never count. Defaults to 5.
	BreakerFailures uint32
	// BreakerOpenFor is how long the breaker stays open before it lets probe
	// requests through. Defaults to 10s.
	BreakerOpenFor time.Duration
	// BreakerProbes is how many requests a half-open breaker lets through;
	// if all succeed it closes. Defaults to 3.
	BreakerProbes uint32
	// Logger receives breaker state changes. Defaults to discarding.
	Logger *slog.Logger
}

func (c *FCMSenderConfig) setDefaults() {
	if c.SendTimeout == 0 {
		c.SendTimeout = 20 * time.Second
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerOpenFor == 0 {
		c.BreakerOpenFor = 10 * time.Second
	}
	if c.BreakerProbes == 0 {
		c.BreakerProbes = 3
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every invalid field at once.
func (c FCMSenderConfig) Validate() error {
	var errs []error
	if c.SendTimeout < 0 {
		errs = append(errs, errors.New("SendTimeout must not be negative"))
	}
	if c.BreakerOpenFor < 0 {
		errs = append(errs, errors.New("BreakerOpenFor must not be negative"))
	}
	return errors.Join(errs...)
}

// FCMSender pushes messages with the firebase messaging client, one HTTP v1
// request each, behind a circuit breaker, and classifies FCM's answers into
// *notification.SendError. It implements app.Pusher and is safe for
// concurrent use.
type FCMSender struct {
	client  *messaging.Client
	cfg     FCMSenderConfig
	breaker *gobreaker.CircuitBreaker[string]

	// Until one request has been answered, pushes go one at a time: Go's
	// transport cannot know a new host speaks HTTP/2 before the TLS
	// handshake, so a cold burst of N pushes would dial N connections
	// (measured: 143 for 128 concurrent sends). After the first answer they
	// all multiplex on one connection.
	warm   atomic.Bool
	warmMu sync.Mutex

	// closed is cancelled when the breaker opens, which cancels the pushes
	// in flight: the SDK retries 503s by itself, and those retries must not
	// reach FCM while the breaker is open.
	closedMu sync.Mutex
	closed   context.Context
	cancel   context.CancelFunc
}

// NewFCMSender returns a sender on client. client must not be nil.
func NewFCMSender(client *messaging.Client, cfg FCMSenderConfig) (*FCMSender, error) {
	if client == nil {
		panic("adapters: NewFCMSender: nil client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid fcm sender config: %w", err)
	}
	cfg.setDefaults()
	log := cfg.Logger.With("component", "herald_fcm")
	failures := cfg.BreakerFailures
	s := &FCMSender{client: client, cfg: cfg}
	s.closed, s.cancel = context.WithCancel(context.Background())
	s.breaker = gobreaker.NewCircuitBreaker[string](gobreaker.Settings{
		Name:        "fcm",
		MaxRequests: cfg.BreakerProbes,
		Timeout:     cfg.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsSuccessful: func(err error) bool {
			var se *notification.SendError
			return err == nil || (errors.As(err, &se) && !se.CountsAgainstProvider)
		},
		// A push cancelled by our own shutdown says nothing about FCM.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			// Runs under the breaker's lock: must not call back into it.
			if to == gobreaker.StateOpen {
				s.closedMu.Lock()
				s.cancel()
				s.closed, s.cancel = context.WithCancel(context.Background())
				s.closedMu.Unlock()
			}
			level := slog.LevelWarn
			if to == gobreaker.StateClosed {
				level = slog.LevelInfo
			}
			log.Log(context.Background(), level, "fcm circuit breaker changed state", "from", from.String(), "to", to.String())
		},
	})
	return s, nil
}

// BreakerState returns the circuit breaker's state: "closed", "half-open"
// or "open".
func (s *FCMSender) BreakerState() string { return s.breaker.State().String() }

// Push implements app.Pusher: it sends msg within SendTimeout and returns
// FCM's message name, or a *notification.SendError. When the breaker is
// open it returns notification.ErrCircuitOpen without a request.
func (s *FCMSender) Push(ctx context.Context, msg notification.Message) (string, error) {
	if !s.warm.Load() {
		s.warmMu.Lock()
		if s.warm.Load() {
			s.warmMu.Unlock()
		} else {
			defer s.warmMu.Unlock()
		}
	}
	s.closedMu.Lock()
	closed := s.closed
	s.closedMu.Unlock()
	name, err := s.breaker.Execute(func() (string, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
		defer cancel()
		defer context.AfterFunc(closed, cancel)()
		if closed.Err() != nil {
			// The breaker opened after Execute let this push through.
			return "", &notification.SendError{Class: notification.ErrCircuitOpen, Reason: "breaker opened"}
		}
		name, err := s.client.Send(ctx, fcmMessage(msg))
		// One attempt, answered or not, is enough: waiting for an answer
		// would serialise every push behind a hanging FCM.
		s.warm.Store(true)
		if err != nil {
			return "", ClassifyFCMError(err)
		}
		return name, nil
	})
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return "", &notification.SendError{Class: notification.ErrCircuitOpen, Reason: err.Error()}
	}
	return name, err
}

func fcmMessage(msg notification.Message) *messaging.Message {
	m := &messaging.Message{Token: msg.Token, Data: msg.Data}
	if msg.Title != "" || msg.Body != "" {
		m.Notification = &messaging.Notification{Title: msg.Title, Body: msg.Body}
	}
	if msg.TTL > 0 {
		ttl := msg.TTL
		m.Android = &messaging.AndroidConfig{TTL: &ttl}
		m.APNS = &messaging.APNSConfig{Headers: map[string]string{
			"apns-expiration": strconv.FormatInt(time.Now().Add(ttl).Unix(), 10),
		}}
	}
	return m
}

// ClassifyFCMError turns an error from the firebase messaging client into a
// *notification.SendError. It must see the SDK's error unwrapped: the SDK's
// helpers use type assertions, not errors.As. The messaging.Is* helpers are
// checked before errorutils.*, because THIRD_PARTY_AUTH_ERROR also reads as
// UNAUTHENTICATED and SENDER_ID_MISMATCH as PERMISSION_DENIED.
func ClassifyFCMError(err error) *notification.SendError {
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
		// a provider-wide failure as well as an alarm.
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrMisconfigured, "UNAUTHENTICATED", true
	case errorutils.IsPermissionDenied(err):
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrMisconfigured, "PERMISSION_DENIED", true
	case errorutils.IsNotFound(err):
		// NOT_FOUND without UNREGISTERED: the project or endpoint is wrong.
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrMisconfigured, "NOT_FOUND", true
	case errors.Is(err, context.Canceled):
		// Cancelled because the breaker opened meanwhile: a failed attempt,
		// but not one more failure for the breaker to count.
		se.Class, se.Code = notification.ErrProviderUnavailable, "CANCELLED"
	case errors.Is(err, context.DeadlineExceeded), errorutils.IsDeadlineExceeded(err):
		se.Class, se.Code, se.CountsAgainstProvider = notification.ErrProviderUnavailable, "DEADLINE_EXCEEDED", true
	default:
		// Network errors and anything unknown: assume FCM is in trouble.
		se.Class, se.CountsAgainstProvider = notification.ErrProviderUnavailable, true
	}
	return se
}

// invalidTokenArgument reports whether an INVALID_ARGUMENT error is about
// the registration token rather than the message: FCM names the field
// "message.token" in a BadRequest detail, and its message says so.
func invalidTokenArgument(err error) bool {
	if resp := errorutils.HTTPResponse(err); resp != nil && resp.Body != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var parsed struct {
			Error struct {
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
		}
	}
	return strings.Contains(strings.ToLower(err.Error()), "registration token")
}

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
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
