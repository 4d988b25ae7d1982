package herald

import (
	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
)

// The types a host names, reachable from package herald so that it never
// imports app, adapters or outbox (whose names would collide with its own
// packages). They are aliases: the values are those the parts use.
type (
	// Inbox is the in-app notification list: List (newest first, by
	// cursor), CountUnread, MarkRead, MarkAllRead. Get it from
	// Herald.Inbox.
	Inbox = app.Inbox
	// InboxPage is one page of a user's inbox and the cursor of the next.
	InboxPage = app.InboxPage
	// Tokens is the device token registry: Register, RegisterMany,
	// Unregister, List. Get it from Herald.Tokens.
	Tokens = app.Tokens
	// TokenRegistration is one entry of Tokens.RegisterMany.
	TokenRegistration = app.TokenRegistration
	// RegistrationError names the entry that made Tokens.RegisterMany
	// refuse an import.
	RegistrationError = app.RegistrationError
	// UserPreferences manages users' push preferences (Set, Get,
	// Delete). Get it from Herald.Preferences.
	UserPreferences = app.UserPreferences
	// Preferences are one user's choices about pushes: types muted for
	// push and quiet hours in their time zone.
	Preferences = notification.Preferences
	// QuietHours is a daily window of local times during which pushes
	// that are not urgent wait.
	QuietHours = notification.QuietHours
	// ErasureReport counts what Herald.ForgetUser deleted.
	ErasureReport = adapters.ErasureReport
	// RelayStats counts what the relay did since Herald was made.
	RelayStats = outbox.RelayStats
	// SenderStats counts what the sender did since Herald was made.
	SenderStats = app.SenderStats
	// DeadLetter is an outbox message, or one event of it, that the relay
	// could not process, kept with the reason so an operator can inspect
	// and replay it (Herald.DeadLetters, Herald.ReplayDeadLetters).
	DeadLetter = app.DeadLetter

	// DeliveryQuery selects deliveries for QueryDeliveries and
	// RetryFailedWhere: by status, FCM error code, recipient, notification
	// and time of the last change, with a cursor and a page size.
	DeliveryQuery = app.DeliveryQuery
	// DeliveryPage is one page of QueryDeliveries and the cursor of the
	// next.
	DeliveryPage = app.DeliveryPage
	// DeliveryInfo is one delivery as an operator sees it, its token as a
	// hash.
	DeliveryInfo = app.DeliveryInfo
	// Timeline is one notification's delivery: every delivery and every
	// attempt with its code and time (Herald.Timeline).
	Timeline = app.Timeline
	// NotificationInfo is a notification as a Timeline shows it.
	NotificationInfo = app.NotificationInfo
	// DeliveryTimeline is one delivery of a Timeline with its attempts.
	DeliveryTimeline = app.DeliveryTimeline
	// Attempt is one push attempted to FCM and its outcome.
	Attempt = app.Attempt
	// BroadcastProgress is how far a broadcast's expansion has come.
	BroadcastProgress = app.BroadcastProgress
	// StatusCount is how many deliveries are in one status, counted,
	// bounded or estimated (Status.Deliveries).
	StatusCount = app.StatusCount
	// CodeCount is how many attempts failed with one error code.
	CodeCount = app.CodeCount
	// RelayBacklog is what waits for the relay, and for how long.
	RelayBacklog = app.RelayBacklog
)

// The page sizes of QueryDeliveries: DefaultDeliveryPageSize when the
// query has no Limit, never more than MaxDeliveryPageSize.
const (
	DefaultDeliveryPageSize = app.DefaultDeliveryPageSize
	MaxDeliveryPageSize     = app.MaxDeliveryPageSize
)

// MaxTimelineDeliveries bounds the deliveries a Timeline lists; its
// Counts count them all.
const MaxTimelineDeliveries = app.MaxTimelineDeliveries

// The inbox's page sizes: Inbox.List returns DefaultPageSize notifications
// when given a limit of 0 or less, and never more than MaxPageSize, so that
// a host can check or echo the limit a client asked for.
const (
	DefaultPageSize = app.DefaultPageSize
	MaxPageSize     = app.MaxPageSize
)

// ErrInvalidCursor is returned by Inbox.List and QueryDeliveries for a
// cursor they did not make.
var ErrInvalidCursor = app.ErrInvalidCursor

// MaxEventBytes bounds the JSON of one raised event (1 MiB): Raise refuses
// a larger event with a *notification.FieldError wrapping
// notification.ErrTooLong, before its first write.
const MaxEventBytes = app.MaxEventBytes
