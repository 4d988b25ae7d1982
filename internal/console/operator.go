package console

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Operator is what the console needs from Herald. Herald's facade
// implements it over its operator methods; tests may use a small fake.
// Every method may be called concurrently.
type Operator interface {
	// Overview is the state of the whole deployment, read from the
	// database, and this process's counters.
	Overview(ctx context.Context) (Overview, error)
	// Deliveries returns a page of the deliveries q selects, newest
	// first, or an error matching ErrInvalidQuery for a cursor or status
	// it does not know.
	Deliveries(ctx context.Context, q Query) (Page, error)
	// RetryFailed makes the failed deliveries with these ids pending again
	// and returns how many it changed.
	RetryFailed(ctx context.Context, ids []int64) (int, error)
	// RetryFailedWithCode makes every failed delivery whose last error had
	// this FCM code pending again.
	RetryFailedWithCode(ctx context.Context, code string) (int, error)
	// RetryAllFailed makes every failed delivery pending again.
	RetryAllFailed(ctx context.Context) (int, error)
	// DeadLetters returns at most limit dead letters, newest first; only
	// those not replayed if pendingOnly.
	DeadLetters(ctx context.Context, pendingOnly bool, limit int) ([]DeadLetter, error)
	// ReplayDeadLetters puts the dead letters with these ids back on the
	// outbox and returns how many it replayed.
	ReplayDeadLetters(ctx context.Context, ids []int64) (int, error)
	// User returns a user's devices and most recent notifications.
	User(ctx context.Context, userID string, limit int) (User, error)
	// Timeline returns a notification's deliveries and their attempts, or
	// an error matching ErrNotFound.
	Timeline(ctx context.Context, notificationID uuid.UUID) (Timeline, error)
	// CancelNotification cancels the notification's undelivered pushes and
	// returns how many it cancelled, or an error matching ErrNotFound.
	CancelNotification(ctx context.Context, notificationID uuid.UUID) (int, error)
}

// ErrNotFound is what an Operator returns for a notification it does not
// know.
var ErrNotFound = errors.New("not found")

// ErrInvalidQuery is what Operator.Deliveries returns for a query it
// cannot answer (a cursor it did not make).
var ErrInvalidQuery = errors.New("invalid query")

// Query selects deliveries: the filters left empty select everything.
type Query struct {
	Status string
	Code   string
	Cursor string
	Limit  int
}

// Page is one page of deliveries and the cursor of the next, "" on the
// last.
type Page struct {
	Deliveries []Delivery
	Next       string
}

// Overview is what the overview page shows. Zero-valued parts the
// Operator could not fill are left out of the page.
type Overview struct {
	// Counts is the number of deliveries in each status, in display order.
	Counts []StatusCount
	// StatusKnown says whether the deployment-wide figures below (DueNow,
	// OldestDue, FailedLastHour, RelayBacklog, RelayLag) were read; the
	// page leaves them out otherwise.
	StatusKnown bool
	// DueNow is how many open deliveries are due; OldestDue how long the
	// oldest of them has been due.
	DueNow        int64
	DueNowAtLeast bool
	OldestDue     time.Duration
	// DeadLetters is how many dead letters wait for a replay.
	DeadLetters int64
	// FailedLastHour counts the deliveries that failed in the last hour,
	// by FCM error code.
	FailedLastHour []CodeCount
	// RelayBacklog is how many committed outbox messages the relay has not
	// consumed; RelayLag the age of the oldest.
	RelayBacklog        int64
	RelayBacklogAtLeast bool
	RelayLag            time.Duration
	// Broadcasts are the broadcasts still being expanded.
	Broadcasts []Broadcast
	// Instances are the live Herald processes on this database.
	Instances []Instance
	// Breaker is this process's FCM circuit breaker state, "" when it does
	// not send.
	Breaker string
	// QuotaPause is how long the fleet's project-wide quota pause still
	// lasts, 0 when none holds.
	QuotaPause time.Duration
	// Process are this process's counters since it started.
	Process []Figure
}

// StatusCount is how many deliveries are in one status: at least Count
// when AtLeast, about Count when Estimated.
type StatusCount struct {
	Status    string
	Count     int64
	AtLeast   bool
	Estimated bool
}

// CodeCount is how many push attempts failed with one FCM error code.
type CodeCount struct {
	Code  string
	Count int64
}

// Broadcast is one broadcast's expansion progress.
type Broadcast struct {
	NotificationID uuid.UUID
	Type           string
	Expanded       int64
	// Refused is how many of its deliveries the database refused (a host's
	// own trigger, CHECK or foreign key on herald_deliveries): those tokens
	// get none. Refusal is the last refusal's reason, its token shown only
	// by its hash; it is the host database's text, shown as text.
	Refused int64
	Refusal string
	// HeldUntil is set while the broadcast is held: the database refused
	// every delivery of its next chunk, so none is skipped and it is tried
	// again then. Holds counts the tries refused in a row, HeldReason is
	// the last one's reason (the host database's text, shown as text).
	HeldUntil  time.Time
	Holds      int
	HeldReason string
	// Tokens estimates how many devices it will reach, 0 when unknown.
	Tokens    int64
	StartedAt time.Time
}

// Instance is one live Herald process.
type Instance struct {
	ID, Host, Version      string
	PID                    int
	StartedAt, HeartbeatAt time.Time
	Leader                 bool
}

// Figure is one named counter.
type Figure struct {
	Name  string
	Value int64
}

// Delivery is one notification to one device, its token shown as a hash.
type Delivery struct {
	ID             int64
	NotificationID uuid.UUID
	Recipient      string // "" when not known
	Type           string // the notification's type, "" when not known
	TokenHash      string
	Status         string
	Attempts       int
	Code           string
	LastError      string
	DueAt          time.Time
	UpdatedAt      time.Time
	// History is the delivery's attempts, oldest first, where known.
	History []Attempt
}

// Attempt is one push attempt and its outcome.
type Attempt struct {
	At      time.Time
	Outcome string
	Code    string
	Error   string
}

// DeadLetter is an outbox message, or one event of it, the relay could not
// process.
type DeadLetter struct {
	ID          int64
	Topic       string
	MessageUUID string
	Reason      string
	CreatedAt   time.Time
	ReplayedAt  time.Time
	// Payload is the message's payload, or its first part when shorter
	// than PayloadBytes, "" unless the host chose to show content.
	Payload      string
	PayloadBytes int
}

// User is what the console shows for a user id.
type User struct {
	ID      string
	Devices []Device
	// MoreDevices says the user has more devices than Devices lists (the
	// most recently seen).
	MoreDevices   bool
	Notifications []Notification
	// Deliveries are the user's most recent deliveries.
	Deliveries []Delivery
}

// Device is one registered device token, shown as a hash.
type Device struct {
	TokenHash    string
	Platform     string
	RegisteredAt time.Time
	LastSeenAt   time.Time
}

// Notification is a notification's summary. Title and Body are "" unless
// the host chose to show content.
type Notification struct {
	ID        uuid.UUID
	Recipient string
	Type      string
	Broadcast bool
	Title     string
	Body      string
	CreatedAt time.Time
	ReadAt    time.Time
	// CancelledAt is when an operator cancelled its pushes, zero if never.
	CancelledAt time.Time
}

// Timeline is one notification and everything that happened to its pushes.
type Timeline struct {
	// Notification is the summary; its ID is always set, the rest when
	// known.
	Notification Notification
	// Counts is how many of its deliveries are in each status, all of
	// them counted.
	Counts []StatusCount
	// Deliveries are its deliveries, the oldest first, with their
	// attempts; Truncated says when there were more than it lists.
	Deliveries []Delivery
	Truncated  bool
	// Broadcast is the expansion of a broadcast, nil for an ordinary
	// notification.
	Broadcast *Broadcast
}
