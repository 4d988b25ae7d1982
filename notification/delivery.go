package notification

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// DeliveryStatus is where a delivery stands.
type DeliveryStatus string

// Delivery statuses. Pending, RetryScheduled and Claimed are open (the
// delivery will be attempted again when due); the rest are final.
const (
	// StatusPending: created, never attempted, due now.
	StatusPending DeliveryStatus = "pending"
	// StatusClaimed: leased by a sender until its due time; if that sender
	// dies, the lease expires and another sender claims it.
	StatusClaimed DeliveryStatus = "claimed"
	// StatusSent: FCM accepted the push.
	StatusSent DeliveryStatus = "sent"
	// StatusRetryScheduled: a transient failure; due again at its next attempt time.
	StatusRetryScheduled DeliveryStatus = "retry_scheduled"
	// StatusTokenPruned: FCM said the token is dead; the token was deleted.
	StatusTokenPruned DeliveryStatus = "token_pruned"
	// StatusTokenMoved: not sent because, when it came due, its token no
	// longer belonged to the notification's recipient (the device was
	// registered to another user). It is final: no path, operator retries
	// included, sends it. Broadcast deliveries do not move: any current
	// owner of a token may receive a broadcast.
	StatusTokenMoved DeliveryStatus = "token_moved"
	// StatusFailed: permanently failed (message rejected, configuration
	// rejected, or attempts exhausted).
	StatusFailed DeliveryStatus = "failed"
	// StatusExpired: not sent because its notification's expiry passed
	// before it could be pushed (an outage, quiet hours).
	StatusExpired DeliveryStatus = "expired"
	// StatusSuperseded: not sent because a newer notification to the same
	// recipient with the same collapse key replaced it first.
	StatusSuperseded DeliveryStatus = "superseded"
	// StatusCancelled: not sent because an operator cancelled it.
	StatusCancelled DeliveryStatus = "cancelled"
	// StatusMuted: not sent because, when it came due, its recipient had
	// muted the notification's type for push (it stays in the inbox).
	StatusMuted DeliveryStatus = "muted"
)

// Statuses lists every delivery status, open ones first.
var Statuses = []DeliveryStatus{
	StatusPending, StatusRetryScheduled, StatusClaimed, StatusSent, StatusTokenPruned, StatusTokenMoved,
	StatusFailed, StatusExpired, StatusSuperseded, StatusCancelled, StatusMuted,
}

// IsKnown reports whether s is one of the delivery statuses.
func (s DeliveryStatus) IsKnown() bool {
	for _, k := range Statuses {
		if s == k {
			return true
		}
	}
	return false
}

// IsFinal reports whether no more attempts will be made.
func (s DeliveryStatus) IsFinal() bool {
	return s.IsKnown() && s != StatusPending && s != StatusRetryScheduled && s != StatusClaimed
}

// Message is one push: a notification's content addressed to one token.
type Message struct {
	NotificationID uuid.UUID
	Token          string
	// Platform is the platform the token was registered with, read when the
	// delivery was claimed.
	Platform Platform
	Content
	PushOptions
}

// Delivery is one notification to one device token, with its attempts. The
// sender claims it, pushes it, and records the outcome through the methods
// below, which are the only way its state changes.
type Delivery struct {
	id             int64
	notificationID uuid.UUID
	token          string
	status         DeliveryStatus
	attempts       int
	dueAt          time.Time
	claimID        uuid.UUID
	lastError      string
	errorCode      string
	messageName    string
	updatedAt      time.Time
	// unpushed is set by Release: the claim ends with no push made.
	unpushed bool
}

// DeliveryFromDatabase rebuilds a stored delivery without validating it. It
// is only for adapters reading what Herald wrote. dueAt is the next attempt
// time, or for a claimed delivery the end of its lease; claimID identifies
// the claim that leased it.
func DeliveryFromDatabase(
	id int64, notificationID uuid.UUID, token string, status DeliveryStatus, attempts int,
	dueAt time.Time, claimID uuid.UUID, lastError, errorCode, messageName string, updatedAt time.Time,
) *Delivery {
	return &Delivery{
		id: id, notificationID: notificationID, token: token, status: status, attempts: attempts,
		dueAt: dueAt, claimID: claimID, lastError: lastError, errorCode: errorCode,
		messageName: messageName, updatedAt: updatedAt,
	}
}

// ID returns the delivery's id.
func (d *Delivery) ID() int64 { return d.id }

// NotificationID returns the notification delivered.
func (d *Delivery) NotificationID() uuid.UUID { return d.notificationID }

// Token returns the device token delivered to.
func (d *Delivery) Token() string { return d.token }

// Status returns the current status.
func (d *Delivery) Status() DeliveryStatus { return d.status }

// Attempts returns how many pushes were attempted. A push the circuit
// breaker stopped is not an attempt.
func (d *Delivery) Attempts() int { return d.attempts }

// DueAt returns when the delivery is next due: the next attempt time, or for
// a claimed delivery the end of its lease.
func (d *Delivery) DueAt() time.Time { return d.dueAt }

// ClaimID returns the claim that leased the delivery, or uuid.Nil.
func (d *Delivery) ClaimID() uuid.UUID { return d.claimID }

// LastError returns the last failure's description, or "".
func (d *Delivery) LastError() string { return d.lastError }

// ErrorCode returns the provider's code for the last failure (for example
// "UNREGISTERED"), or "".
func (d *Delivery) ErrorCode() string { return d.errorCode }

// MessageName returns the provider's message name once sent.
func (d *Delivery) MessageName() string { return d.messageName }

// UpdatedAt returns when the delivery last changed.
func (d *Delivery) UpdatedAt() time.Time { return d.updatedAt }

// MarkSent records that FCM accepted the push under messageName.
func (d *Delivery) MarkSent(messageName string, now time.Time) error {
	if err := d.mustBeClaimed("sent"); err != nil {
		return err
	}
	d.status, d.messageName, d.attempts = StatusSent, truncate(messageName, maxMessageNameLength), d.attempts+1
	d.lastError, d.errorCode = "", ""
	d.updatedAt = now
	return nil
}

// RecordFailure applies a failed push's outcome, decided by its class (see
// SendError): a dead token, or one of another Firebase project
// (ErrSenderMismatch), is pruned; a rejected message or configuration fails
// for good; a transient failure, throttling, or rejected APNs or web push
// credentials (ErrPlatformAuthRejected) is retried after the policy's delay
// (never before Retry-After) until attempts run out; a push
// the circuit breaker stopped is released, due again at now plus the
// policy's base delay, with no attempt counted; a push Herald cancelled
// (ErrPushCancelled) is released due now; a push refused for our own
// credentials (ErrCredentialsRejected) is released after the policy's first
// delay, its error kept, no attempt counted. jitter is a random number in
// [0, 1). It returns the new status.
func (d *Delivery) RecordFailure(err error, policy RetryPolicy, now time.Time, jitter float64) (DeliveryStatus, error) {
	if e := d.mustBeClaimed("failure"); e != nil {
		return d.status, e
	}
	if err == nil {
		return d.status, fmt.Errorf("%w: failure without an error", ErrInvalidTransition)
	}
	d.updatedAt = now
	var se *SendError
	if !errors.As(err, &se) {
		se = &SendError{Class: ErrProviderUnavailable, Reason: err.Error(), CountsAgainstProvider: true}
	}
	switch {
	case errors.Is(se.Class, ErrCircuitOpen):
		d.release(now.Add(policy.BaseDelay))
		return d.status, nil
	case errors.Is(se.Class, ErrPushCancelled):
		d.release(now)
		return d.status, nil
	case errors.Is(se.Class, ErrCredentialsRejected):
		// Not this delivery's fault: keep its attempts, remember why.
		d.lastError, d.errorCode = truncate(se.Error(), maxErrorLength), se.Code
		d.release(now.Add(policy.Delay(1, se.RetryAfter, jitter)))
		return d.status, nil
	}
	d.attempts++
	d.lastError, d.errorCode = truncate(se.Error(), maxErrorLength), se.Code
	switch {
	case errors.Is(se.Class, ErrTokenUnregistered), errors.Is(se.Class, ErrTokenRejected),
		errors.Is(se.Class, ErrSenderMismatch):
		d.status = StatusTokenPruned
	case errors.Is(se.Class, ErrMessageRejected),
		// Rejected platform credentials may be fixed: retried below.
		errors.Is(se.Class, ErrMisconfigured) && !errors.Is(se.Class, ErrPlatformAuthRejected):
		d.status = StatusFailed
	case d.attempts >= policy.MaxAttempts:
		d.status = StatusFailed
	default:
		d.status = StatusRetryScheduled
		d.dueAt = now.Add(policy.Delay(d.attempts, se.RetryAfter, jitter))
	}
	return d.status, nil
}

// MarkExpired records that the claimed delivery was not pushed because its
// notification expired before the push could start.
func (d *Delivery) MarkExpired(now time.Time) error {
	if err := d.mustBeClaimed("expired"); err != nil {
		return err
	}
	d.status, d.updatedAt = StatusExpired, now
	d.errorCode, d.lastError = "EXPIRED", "notification expired before the push"
	return nil
}

// Release gives a claimed delivery back unattempted, due at dueAt, for
// example when the sender shuts down before pushing it. Nothing of it
// reached FCM: see Unpushed.
func (d *Delivery) Release(dueAt time.Time, now time.Time) error {
	if err := d.mustBeClaimed("release"); err != nil {
		return err
	}
	d.release(dueAt)
	d.updatedAt = now
	d.unpushed = true
	return nil
}

// Unpushed reports whether the delivery was given back by Release: its
// claim ended with no request to FCM. The store gives back what the claim
// counted against the device's per-device limits, which are of pushes: a
// throttled device's pushes, claimed and given back at each end of its
// hold, would otherwise use up its minute with pushes never made.
func (d *Delivery) Unpushed() bool { return d.unpushed }

func (d *Delivery) release(dueAt time.Time) {
	d.status = StatusRetryScheduled
	if d.attempts == 0 {
		d.status = StatusPending
	}
	d.dueAt = dueAt
}

func (d *Delivery) mustBeClaimed(what string) error {
	if d.status != StatusClaimed {
		return fmt.Errorf("%w: %s from %s", ErrInvalidTransition, what, d.status)
	}
	return nil
}

const maxErrorLength = 500

// maxMessageNameLength bounds the message name kept from FCM's answer (its
// names are "projects/<id>/messages/<id>", well under it): a broken or
// hostile answer must not store megabytes per delivery.
const maxMessageNameLength = 256

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 { // do not cut a UTF-8 sequence
		n--
	}
	return s[:n]
}
