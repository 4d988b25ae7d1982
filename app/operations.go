package app

import (
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/notification"
)

// The operator's view of deliveries: what an admin page, the console and
// the herald command show and act on. Nothing here takes part in sending,
// and no value carries a device token, only its hash.

// DeliveryQuery selects deliveries to list (or failed ones to retry). Every
// filter left at its zero value selects everything; the filters combine
// with AND.
type DeliveryQuery struct {
	// Status keeps the deliveries in this status ("" for any).
	Status notification.DeliveryStatus
	// Code keeps the deliveries whose last error has this FCM error code
	// ("UNREGISTERED", "UNAVAILABLE", "QUOTA_EXCEEDED"...), or one of
	// Herald's own ("TOKEN_MOVED", "CANCELLED", "MUTED"; and for a push
	// that waits, "QUIET_HOURS" or "DEVICE_RATE").
	Code string
	// Recipient keeps the deliveries of notifications to this user.
	Recipient string
	// NotificationID keeps the deliveries of this notification.
	NotificationID uuid.UUID
	// Since keeps the deliveries that changed at or after this time.
	Since time.Time
	// Cursor is the Next of the previous page, "" for the first.
	Cursor string
	// Limit is the most deliveries on a page. Defaults to
	// DefaultDeliveryPageSize; at most MaxDeliveryPageSize.
	Limit int
}

// The page sizes of a delivery listing.
const (
	// DefaultDeliveryPageSize is the page size of a DeliveryQuery without
	// a Limit.
	DefaultDeliveryPageSize = 100
	// MaxDeliveryPageSize is the largest page of deliveries.
	MaxDeliveryPageSize = 1000
)

// DeliveryPage is one page of deliveries, the newest first (by id: the
// order they were created in, which never changes under a cursor), and the
// cursor of the next page ("" on the last).
type DeliveryPage struct {
	Deliveries []DeliveryInfo
	Next       string
}

// DeliveryInfo is one delivery as an operator sees it: its notification's
// recipient and type, its token as a hash, where it stands and its last
// error.
type DeliveryInfo struct {
	ID             int64
	NotificationID uuid.UUID
	Recipient      string
	Type           string
	// TokenHash is the device token as TokenHash shows it.
	TokenHash string
	Status    notification.DeliveryStatus
	// Attempts is how many pushes were attempted.
	Attempts int
	// Code and LastError are the last attempt's error, if it failed.
	Code      string
	LastError string
	// DueAt is the next attempt's time for an open delivery (the end of
	// its lease when claimed).
	DueAt     time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Timeline is everything known about one notification's delivery: the
// notification, how many of its deliveries stand in each status, and each
// delivery (at most MaxTimelineDeliveries, the oldest first) with every
// attempt.
type Timeline struct {
	Notification NotificationInfo
	// Counts is how many deliveries are in each status, all of them
	// counted (also those beyond MaxTimelineDeliveries).
	Counts map[notification.DeliveryStatus]int
	// Deliveries are the first MaxTimelineDeliveries deliveries, by id.
	Deliveries []DeliveryTimeline
	// Truncated is true when the notification has more deliveries than
	// Deliveries holds (a broadcast).
	Truncated bool
	// Broadcast is the expansion of a broadcast (or of a recipient with
	// very many devices), nil for an ordinary notification.
	Broadcast *BroadcastProgress
}

// MaxTimelineDeliveries bounds the deliveries a Timeline lists.
const MaxTimelineDeliveries = 1000

// NotificationInfo is a notification as an operator sees it. Title and
// Body are the pushed text: a page shows them only where its host allows.
type NotificationInfo struct {
	ID        uuid.UUID
	Recipient string
	Type      string
	Title     string
	Body      string
	// Broadcast is true for a notification to every device (of some
	// platforms) rather than to one recipient.
	Broadcast bool
	CreatedAt time.Time
	// CancelledAt is when an operator cancelled it, zero if never.
	CancelledAt time.Time
	// SendAt is when its pushes were held until (the draft's SendAt), zero
	// if sent at once.
	SendAt time.Time
	// ExpiresAt is when its pushes stop (their deliveries end expired),
	// zero if never.
	ExpiresAt time.Time
	// CollapseKey is its collapse key, "" if none; SupersededAt is when a
	// newer notification with that key replaced it (its deliveries not yet
	// pushed end superseded), zero if never.
	CollapseKey  string
	SupersededAt time.Time
	// IdempotencyKey is the key it was raised with, "" if none.
	IdempotencyKey string
}

// DeliveryTimeline is one delivery and its attempts, oldest first.
type DeliveryTimeline struct {
	DeliveryInfo
	Attempts []Attempt
}

// Attempt is one push attempted to FCM and its outcome.
type Attempt struct {
	// Number counts the delivery's attempts from 1 (an operator's retry
	// starts again from 1).
	Number int
	// Outcome is the status the attempt left the delivery in: sent,
	// retry_scheduled, failed or token_pruned.
	Outcome notification.DeliveryStatus
	Code    string
	Error   string
	At      time.Time
}

// BroadcastProgress is how far the expansion of a broadcast (or of a
// recipient with more devices than one statement expands) has come.
type BroadcastProgress struct {
	NotificationID uuid.UUID
	Type           string
	// Recipient is set when this continues one recipient's many devices;
	// "" for a broadcast to every device.
	Recipient string
	// Platforms restricts a broadcast to these platforms (none: all).
	Platforms []string
	// Expanded is how many deliveries were created so far.
	Expanded int64
	// Refused is how many of them the database refused (a host's own
	// trigger, CHECK or foreign key on herald_deliveries): those tokens get
	// no delivery, and the rest of the broadcast goes on. Refusal is the
	// last refusal's reason, the token shown by its hash.
	Refused int64
	Refusal string
	// HeldUntil is set while the broadcast is held: the database refused
	// every delivery of its next chunk (a host's freeze trigger, or a
	// constraint refusing just those tokens), so nothing of it was skipped
	// and it waits, the expander working on other broadcasts meanwhile. It
	// is tried again at HeldUntil (a time already past means at the
	// expander's next turn). Holds is how many tries in a row were refused;
	// HeldReason is the last one's reason, its token shown by its hash.
	HeldUntil  time.Time
	Holds      int
	HeldReason string
	// Tokens estimates how many device tokens a broadcast to every device
	// will reach (the planner's estimate of the registry's size; 0 when
	// unknown or for a recipient's continuation).
	Tokens    int64
	StartedAt time.Time
	// FinishedAt is zero while it is still expanding.
	FinishedAt time.Time
}

// StatusCount is how many deliveries are in one status. Counting every row
// of a table of millions is slow, so large counts are bounded or estimated,
// and say so.
type StatusCount struct {
	Status notification.DeliveryStatus
	Count  int64
	// AtLeast is true when counting stopped at Count (there are more).
	AtLeast bool
	// Estimated is true when Count is the planner's estimate, not a count.
	Estimated bool
}

// CodeCount is how many failed attempts had one error code.
type CodeCount struct {
	Code  string
	Count int64
}

// RelayBacklog is the committed outbox messages the relay has not
// processed yet.
type RelayBacklog struct {
	// Messages is how many (at most StatusCountCap; AtLeast says so).
	Messages int64
	AtLeast  bool
	// OldestAge is how long the oldest has waited: the relay's lag.
	OldestAge time.Duration
}

// StatusCountCap bounds each count the status makes by reading rows.
const StatusCountCap = 100_000

// StatusReport is the deployment's state read from the database, as the
// status shows it.
type StatusReport struct {
	// At is the database's clock when the report was read.
	At time.Time
	// Deliveries counts the deliveries by status, open ones first.
	Deliveries []StatusCount
	// DueNow is how many open deliveries are due (at most StatusCountCap).
	DueNow        int64
	DueNowAtLeast bool
	// OldestDueAge is how long the longest-waiting due delivery has been
	// due (0 when none is).
	OldestDueAge time.Duration
	// FailedLastHour counts the attempts that failed in the last hour by
	// error code, the most frequent first.
	FailedLastHour []CodeCount
	// DeadLetters is how many dead letters wait to be replayed.
	DeadLetters int64
	// Relay is the outbox messages waiting for the relay.
	Relay RelayBacklog
	// Broadcasts are the broadcasts still expanding, the oldest first (at
	// most 20).
	Broadcasts []BroadcastProgress
	// QuotaPause is how long the fleet's project-wide quota pause still
	// lasts (0 when none holds).
	QuotaPause time.Duration
}
