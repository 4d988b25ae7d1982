package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// PostgresNotificationRepository stores notifications in
// herald_notifications: written in the host's transaction when events are
// raised, read and marked read as the in-app inbox.
type PostgresNotificationRepository struct {
	db DB
}

// NewPostgresNotificationRepository returns a repository on db.
func NewPostgresNotificationRepository(db DB) *PostgresNotificationRepository {
	return &PostgresNotificationRepository{db: requireDB(db)}
}

// insertChunk bounds one INSERT's rows, so a huge batch stays a few round
// trips of bounded size.
const insertChunk = 5000

// Add inserts notifications, one statement per chunk of 5,000. To write
// them in the host's transaction, make the repository on that pgx.Tx.
func (r *PostgresNotificationRepository) Add(ctx context.Context, ns []*notification.Notification) error {
	for start := 0; start < len(ns); start += insertChunk {
		chunk := ns[start:min(start+insertChunk, len(ns))]
		ids := make([]uuid.UUID, len(chunk))
		recipients := make([]string, len(chunk))
		types := make([]string, len(chunk))
		titles := make([]string, len(chunk))
		bodies := make([]string, len(chunk))
		data := make([]string, len(chunk))
		ttls := make([]int32, len(chunk))
		audiences := make([]*string, len(chunk))
		created := make([]time.Time, len(chunk))
		for i, n := range chunk {
			c := n.Content()
			ids[i], recipients[i], types[i] = n.ID(), n.Recipient(), n.Type()
			titles[i], bodies[i], ttls[i], created[i] = c.Title, c.Body, int32(c.TTL/time.Second), n.CreatedAt()
			b, err := json.Marshal(c.Data)
			if err != nil {
				return fmt.Errorf("encode data of notification %s: %w", n.ID(), err)
			}
			if c.Data == nil {
				b = []byte("{}")
			}
			data[i] = string(b)
			if a := n.Broadcast(); a != nil {
				b, err := json.Marshal(a)
				if err != nil {
					return fmt.Errorf("encode audience of notification %s: %w", n.ID(), err)
				}
				audience := string(b)
				audiences[i] = &audience
			}
		}
		_, err := r.db.Exec(ctx, `
			INSERT INTO herald_notifications (id, recipient, type, title, body, data, ttl_seconds, created_at, audience)
			SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int[],
				$8::timestamptz[], $9::jsonb[])`,
			uuidArray(ids), recipients, types, titles, bodies, data, ttls, created, audiences)
		if err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
	}
	return nil
}

const notificationColumns = `id, recipient, audience, type, title, body, data, ttl_seconds, created_at, read_at`

// Get returns one notification, or notification.ErrNotFound.
func (r *PostgresNotificationRepository) Get(ctx context.Context, id uuid.UUID) (*notification.Notification, error) {
	rows, err := r.db.Query(ctx, `SELECT `+notificationColumns+` FROM herald_notifications WHERE id = $1`, id)
	if err != nil {
		return nil, fmt.Errorf("get notification: %w", err)
	}
	n, err := pgx.CollectExactlyOneRow(rows, scanNotification)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notification.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get notification: %w", err)
	}
	return n, nil
}

// ListForRecipient returns up to limit of recipient's notifications, newest
// first, strictly after the cursor when one is given.
func (r *PostgresNotificationRepository) ListForRecipient(ctx context.Context, recipient string, after *app.InboxCursor, limit int) ([]*notification.Notification, error) {
	var rows pgx.Rows
	var err error
	if after == nil {
		rows, err = r.db.Query(ctx, `SELECT `+notificationColumns+` FROM herald_notifications
			WHERE recipient = $1 ORDER BY created_at DESC, id DESC LIMIT $2`, recipient, limit)
	} else {
		rows, err = r.db.Query(ctx, `SELECT `+notificationColumns+` FROM herald_notifications
			WHERE recipient = $1 AND (created_at, id) < ($2, $3)
			ORDER BY created_at DESC, id DESC LIMIT $4`, recipient, after.CreatedAt, after.ID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	ns, err := pgx.CollectRows(rows, scanNotification)
	if err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	return ns, nil
}

// CountUnread counts recipient's unread notifications.
func (r *PostgresNotificationRepository) CountUnread(ctx context.Context, recipient string) (int, error) {
	var n int
	err := r.db.QueryRow(ctx, `SELECT count(*) FROM herald_notifications WHERE recipient = $1 AND read_at IS NULL`, recipient).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count unread notifications: %w", err)
	}
	return n, nil
}

// Update loads recipient's notification id for update, applies fn, and saves
// the result, in one transaction. It returns notification.ErrNotFound when
// the notification does not exist or belongs to someone else.
func (r *PostgresNotificationRepository) Update(ctx context.Context, recipient string, id uuid.UUID, fn func(*notification.Notification) error) error {
	return pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+notificationColumns+` FROM herald_notifications
			WHERE id = $1 AND recipient = $2 FOR UPDATE`, id, recipient)
		if err != nil {
			return fmt.Errorf("load notification: %w", err)
		}
		n, err := pgx.CollectExactlyOneRow(rows, scanNotification)
		if errors.Is(err, pgx.ErrNoRows) {
			return notification.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("load notification: %w", err)
		}
		if err := fn(n); err != nil {
			return err
		}
		var readAt *time.Time
		if n.IsRead() {
			t := n.ReadAt()
			readAt = &t
		}
		if _, err := tx.Exec(ctx, `UPDATE herald_notifications SET read_at = $2 WHERE id = $1`, id, readAt); err != nil {
			return fmt.Errorf("save notification: %w", err)
		}
		return nil
	})
}

// MarkAllRead marks every unread notification of recipient read at at and
// returns how many it marked.
func (r *PostgresNotificationRepository) MarkAllRead(ctx context.Context, recipient string, at time.Time) (int, error) {
	tag, err := r.db.Exec(ctx, `UPDATE herald_notifications SET read_at = $2 WHERE recipient = $1 AND read_at IS NULL`, recipient, at)
	if err != nil {
		return 0, fmt.Errorf("mark all read: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

func scanNotification(row pgx.CollectableRow) (*notification.Notification, error) {
	var (
		id                          uuid.UUID
		recipient, typ, title, body string
		data                        map[string]string
		ttl                         int32
		createdAt                   time.Time
		readAt                      *time.Time
		audience                    *notification.Audience
	)
	if err := row.Scan(&id, &recipient, &audience, &typ, &title, &body, &data, &ttl, &createdAt, &readAt); err != nil {
		return nil, err
	}
	var read time.Time
	if readAt != nil {
		read = *readAt
	}
	content := notification.Content{Title: title, Body: body, Data: data, TTL: time.Duration(ttl) * time.Second}
	return notification.NotificationFromDatabase(id, recipient, audience, typ, content, createdAt, read), nil
}
