package app

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/notification"
)

// ErrInvalidCursor reports a page cursor (of the inbox or of a delivery
// listing) that Herald did not make.
var ErrInvalidCursor = errors.New("invalid page cursor")

// InboxCursor is a position in an inbox: the last notification of a page.
type InboxCursor struct {
	CreatedAt time.Time
	ID        uuid.UUID
}

// String encodes the cursor for an API response.
func (c InboxCursor) String() string {
	b := make([]byte, 8+16)
	binary.BigEndian.PutUint64(b, uint64(c.CreatedAt.UnixMicro()))
	copy(b[8:], c.ID[:])
	return base64.RawURLEncoding.EncodeToString(b)
}

// minCursorMicros is the earliest time Postgres's timestamptz holds
// (4714-11-24 00:00 UTC BC), in microseconds since the Unix epoch. A
// cursor's time comes from a stored created_at, so one before it was
// forged; sent to Postgres it failed the query ("timestamp out of range"),
// or (below about year -290,000) wrapped around to a time in the far
// future. Every later int64 of microseconds is in Postgres's range.
const minCursorMicros = -210866803200000000

// parseInboxCursor decodes a cursor made by InboxCursor.String. It fails
// with ErrInvalidCursor.
func parseInboxCursor(s string) (InboxCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 24 {
		return InboxCursor{}, ErrInvalidCursor
	}
	micros := int64(binary.BigEndian.Uint64(b))
	if micros < minCursorMicros {
		return InboxCursor{}, ErrInvalidCursor
	}
	var id uuid.UUID
	copy(id[:], b[8:])
	return InboxCursor{CreatedAt: time.UnixMicro(micros).UTC(), ID: id}, nil
}

// NotificationRepository is the inbox's view of stored notifications.
type NotificationRepository interface {
	ListForRecipient(ctx context.Context, recipient string, after *InboxCursor, limit int) ([]*notification.Notification, error)
	CountUnread(ctx context.Context, recipient string) (int, error)
	// Update loads one of recipient's notifications, applies fn and saves
	// it in one transaction; notification.ErrNotFound if it is not theirs.
	Update(ctx context.Context, recipient string, id uuid.UUID, fn func(*notification.Notification) error) error
	MarkAllRead(ctx context.Context, recipient string, at time.Time) (int, error)
}

// InboxPage is one page of an inbox, newest first. Next is the cursor of
// the following page, or "" on the last page.
type InboxPage struct {
	Notifications []*notification.Notification
	Next          string
}

// Inbox is a user's in-app notification list. It is safe for concurrent use.
type Inbox struct {
	repo NotificationRepository
	now  func() time.Time
}

// DefaultPageSize is the inbox page size when none is given; MaxPageSize caps it.
const (
	DefaultPageSize = 20
	MaxPageSize     = 200
)

// NewInbox returns an Inbox on repo. now may be nil (time.Now).
func NewInbox(repo NotificationRepository, now func() time.Time) *Inbox {
	if repo == nil {
		panic("app: NewInbox: nil repository")
	}
	return &Inbox{repo: repo, now: clockOrDefault(now)}
}

// checkUser refuses a user id Herald never stores as a recipient (empty,
// not UTF-8, holding NUL, longer than notification.MaxRecipientLength),
// with *notification.FieldError values. The empty one matters most: a
// broadcast is stored with the empty recipient, so an inbox call for ""
// (a host's session without a user) read and marked every broadcast.
func checkUser(op, user string) error {
	if err := notification.ValidateUserID(user); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// List returns a page of user's notifications, newest first. cursor is ""
// for the first page, or a previous page's Next. limit 0 means
// DefaultPageSize; it is capped at MaxPageSize. A user id Herald would
// never store (empty, not UTF-8, too long) fails with
// *notification.FieldError, as in every Inbox method.
func (in *Inbox) List(ctx context.Context, user, cursor string, limit int) (InboxPage, error) {
	if err := checkUser("list inbox", user); err != nil {
		return InboxPage{}, err
	}
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	var after *InboxCursor
	if cursor != "" {
		c, err := parseInboxCursor(cursor)
		if err != nil {
			return InboxPage{}, err
		}
		after = &c
	}
	// One extra row tells whether another page follows.
	ns, err := in.repo.ListForRecipient(ctx, user, after, limit+1)
	if err != nil {
		return InboxPage{}, err
	}
	page := InboxPage{Notifications: ns}
	if len(ns) > limit {
		page.Notifications = ns[:limit]
		last := ns[limit-1]
		page.Next = InboxCursor{CreatedAt: last.CreatedAt(), ID: last.ID()}.String()
	}
	return page, nil
}

// CountUnread counts user's unread notifications.
func (in *Inbox) CountUnread(ctx context.Context, user string) (int, error) {
	if err := checkUser("count unread notifications", user); err != nil {
		return 0, err
	}
	return in.repo.CountUnread(ctx, user)
}

// MarkRead marks one of user's notifications read. Marking it again is a
// no-op. It fails with notification.ErrNotFound if it is not user's.
func (in *Inbox) MarkRead(ctx context.Context, user string, id uuid.UUID) error {
	if err := checkUser("mark notification read", user); err != nil {
		return err
	}
	err := in.repo.Update(ctx, user, id, func(n *notification.Notification) error {
		n.MarkRead(in.now())
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark notification %s read: %w", id, err)
	}
	return nil
}

// MarkAllRead marks all of user's notifications read and returns how many
// were unread. It marks them in bounded chunks, so a user with millions
// unread never holds up anyone else's notifications; a notification raised
// for user while it runs may or may not be marked.
func (in *Inbox) MarkAllRead(ctx context.Context, user string) (int, error) {
	if err := checkUser("mark all read", user); err != nil {
		return 0, err
	}
	return in.repo.MarkAllRead(ctx, user, in.now())
}
