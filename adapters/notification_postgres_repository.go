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
	"github.com/herald-push/herald/internal/telemetry"
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

// Add inserts notifications, one statement per chunk of 5,000, and returns
// them as stored (see app.NotificationWriter): a notification whose
// idempotency key its recipient already holds is not inserted, and the
// holder is returned in its place. A key whose window has passed (its
// idempotent_until is not after the database's clock) is released first,
// in the same transaction. A chunk with no key costs one statement; one
// with keys, up to three (release, insert, and a lookup only when some
// were duplicates). To write them in the host's transaction, make the
// repository on that pgx.Tx.
//
// The database stamps created_at, and idempotent_until from it: every
// replica raising has its own clock, and judged by the raising one's a
// replica running minutes ahead freed keys another had just taken (the
// push went twice) and its notifications stayed "newest" for minutes,
// winning every collapse and the top of the inbox. The inserted
// notifications are restamped (StampCreatedAt) with what was stored.
//
// When ctx carries a traced span (Raise's), its W3C traceparent is stored
// with each notification, for the push spans to link to.
func (r *PostgresNotificationRepository) Add(ctx context.Context, ns []*notification.Notification) ([]*notification.Notification, error) {
	stored := append([]*notification.Notification(nil), ns...)
	for start := 0; start < len(ns); start += insertChunk {
		if err := r.addChunk(ctx, stored[start:min(start+insertChunk, len(ns))]); err != nil {
			return nil, err
		}
	}
	return stored, nil
}

// addChunk inserts chunk and replaces, in place, each duplicate by the
// notification holding its key.
func (r *PostgresNotificationRepository) addChunk(ctx context.Context, chunk []*notification.Notification) error {
	n := len(chunk)
	ids := make(ptrArray[uuidElem], n)
	recipients, types, titles, bodies := make(ptrArray[textElem], n), make(ptrArray[textElem], n),
		make(ptrArray[textElem], n), make(ptrArray[textElem], n)
	data := make([]string, n)
	ttls := make([]int32, n)
	audiences, keys, collapseKeys, options := make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
	windows := make([]*int64, n) // microseconds; NULL without a key
	sendAt, expiresAt := make([]*time.Time, n), make([]*time.Time, n)
	urgent := make([]bool, n)
	keyed := 0
	for i, nt := range chunk {
		urgent[i] = nt.Urgent()
		c := nt.Content()
		ids[i], recipients[i], types[i] = uuidElem(nt.ID()), textElem(nt.Recipient()), textElem(nt.Type())
		titles[i], bodies[i], ttls[i] = textElem(c.Title), textElem(c.Body), int32(c.TTL/time.Second)
		b, err := json.Marshal(c.Data)
		if err != nil {
			return fmt.Errorf("encode data of notification %s: %w", nt.ID(), err)
		}
		if c.Data == nil {
			b = []byte("{}")
		}
		data[i] = string(b)
		if a := nt.Broadcast(); a != nil {
			b, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("encode audience of notification %s: %w", nt.ID(), err)
			}
			audiences[i] = ptr(string(b))
		}
		if k := nt.IdempotencyKey(); k != "" {
			keys[i], windows[i] = ptr(k), ptr(nt.IdempotencyWindow().Microseconds())
			keyed++
		}
		p := nt.PushOptions()
		if p.CollapseKey != "" {
			collapseKeys[i] = ptr(p.CollapseKey)
		}
		if t := nt.SendAt(); !t.IsZero() {
			sendAt[i] = ptr(t)
		}
		if !p.ExpiresAt.IsZero() {
			expiresAt[i] = ptr(p.ExpiresAt)
		}
		if p.Android != nil || p.APNs != nil || p.Web != nil {
			b, err := json.Marshal(storedOptions{Android: p.Android, APNs: p.APNs, Web: p.Web})
			if err != nil {
				return fmt.Errorf("encode options of notification %s: %w", nt.ID(), err)
			}
			options[i] = ptr(string(b))
		}
	}
	var traceParent *string // NULL when Raise was not traced
	if tp := telemetry.TraceParent(ctx); tp != "" {
		traceParent = &tp
	}
	args := []any{ids, recipients, types, titles, bodies, data, ttls, windows, audiences,
		keys, sendAt, expiresAt, collapseKeys, options, traceParent, urgent}
	// The creation time is statement_timestamp(): when this statement
	// reached the database. Not now(), which inside the host's transaction
	// is the time it began: a host that raised at the end of a transaction
	// open for minutes would date its notification back to the BEGIN, and
	// one raised meanwhile in a short transaction would supersede it and
	// list above it though raised before. Not clock_timestamp() either:
	// read once per statement, the one time serves created_at and
	// idempotent_until alike, and the notifications of one raise share it,
	// ordered by their time-ordered ids, as they were before.
	const insert = `
		INSERT INTO herald_notifications (id, recipient, type, title, body, data, ttl_seconds, created_at, audience,
			idempotency_key, idempotent_until, send_at, expires_at, collapse_key, options, urgent, trace_parent)
		SELECT u.id, u.recipient, u.type, u.title, u.body, u.data, u.ttl, statement_timestamp(), u.audience,
			u.key, statement_timestamp() + u.window_us * interval '1 microsecond', u.send_at, u.expires_at,
			u.collapse_key, u.options, u.urgent, $15::text
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int[],
			$8::bigint[], $9::jsonb[], $10::text[], $11::timestamptz[], $12::timestamptz[],
			$13::text[], $14::jsonb[], $16::boolean[])
			AS u(id, recipient, type, title, body, data, ttl, window_us, audience, key, send_at, expires_at,
				collapse_key, options, urgent)`
	if keyed == 0 {
		// Every notification goes in, and they share the statement's
		// time: one value comes back, not a row each (those cost five
		// allocations a notification in the host's Raise).
		var at time.Time
		if err := r.db.QueryRow(ctx, `WITH inserted AS (`+insert+`) SELECT statement_timestamp()`, args...).Scan(&at); err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
		for _, nt := range chunk {
			nt.StampCreatedAt(at)
		}
		return nil
	}
	// A key whose window has passed by the database's clock is released,
	// so the unique index (which knows no time) lets the new notification
	// take it. A concurrent raise of the same key waits here, or at the
	// insert, for this transaction to end.
	if _, err := r.db.Exec(ctx, `
		UPDATE herald_notifications n SET idempotency_key = NULL
		FROM unnest($1::text[], $2::text[]) AS k(recipient, key)
		WHERE k.key IS NOT NULL AND n.recipient = k.recipient AND n.idempotency_key = k.key
			AND n.idempotent_until <= statement_timestamp()`, recipients, keys); err != nil {
		return fmt.Errorf("release expired idempotency keys: %w", err)
	}
	rows, err := r.db.Query(ctx, insert+`
		ON CONFLICT (recipient, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
		RETURNING id, created_at`, args...)
	if err != nil {
		return fmt.Errorf("insert notifications: %w", err)
	}
	type stamp struct {
		ID        uuid.UUID
		CreatedAt time.Time
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowToStructByPos[stamp])
	if err != nil {
		return fmt.Errorf("insert notifications: %w", err)
	}
	stamped := make(map[uuid.UUID]time.Time, len(inserted))
	for _, s := range inserted {
		stamped[s.ID] = s.CreatedAt
	}
	for _, nt := range chunk {
		if at, ok := stamped[nt.ID()]; ok {
			nt.StampCreatedAt(at)
		}
	}
	if len(inserted) == n {
		return nil
	}
	var dupRecipients, dupKeys []string
	for i, nt := range chunk {
		if _, ok := stamped[nt.ID()]; !ok {
			dupRecipients, dupKeys = append(dupRecipients, string(recipients[i])), append(dupKeys, *keys[i])
		}
	}
	// A new statement: it sees what a concurrent transaction committed
	// while the insert waited for it.
	rows, err = r.db.Query(ctx, `SELECT `+notificationColumns+` FROM herald_notifications
		WHERE (recipient, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, dupRecipients, dupKeys)
	if err != nil {
		return fmt.Errorf("read notifications holding idempotency keys: %w", err)
	}
	holders, err := pgx.CollectRows(rows, scanNotification)
	if err != nil {
		return fmt.Errorf("read notifications holding idempotency keys: %w", err)
	}
	byKey := make(map[[2]string]*notification.Notification, len(holders))
	for _, h := range holders {
		byKey[[2]string{h.Recipient(), h.IdempotencyKey()}] = h
	}
	for i, nt := range chunk {
		if _, ok := stamped[nt.ID()]; ok {
			continue
		}
		h, ok := byKey[[2]string{string(recipients[i]), *keys[i]}]
		if !ok { // cannot happen: the insert conflicted with a row this transaction sees
			return fmt.Errorf("notification %s: idempotency key %q is held, but its holder is not visible", nt.ID(), *keys[i])
		}
		chunk[i] = h
	}
	return nil
}

// storedOptions is the JSON of the options column.
type storedOptions struct {
	Android *notification.AndroidOptions `json:"android,omitempty"`
	APNs    *notification.APNsOptions    `json:"apns,omitempty"`
	Web     *notification.WebOptions     `json:"web,omitempty"`
}

func ptr[T any](v T) *T { return &v }

const notificationColumns = `id, recipient, audience, type, title, body, data, ttl_seconds, created_at, read_at,
	idempotency_key, idempotent_until, send_at, expires_at, collapse_key, superseded_at, options`

// inboxVisible is the inbox's filter: a notification shows from its send
// time, and not once a newer one with its collapse key replaced it.
const inboxVisible = `(send_at IS NULL OR send_at <= now()) AND superseded_at IS NULL`

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
			WHERE recipient = $1 AND `+inboxVisible+` ORDER BY created_at DESC, id DESC LIMIT $2`, recipient, limit)
	} else {
		rows, err = r.db.Query(ctx, `SELECT `+notificationColumns+` FROM herald_notifications
			WHERE recipient = $1 AND (created_at, id) < ($2, $3) AND `+inboxVisible+`
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
	err := r.db.QueryRow(ctx, `SELECT count(*) FROM herald_notifications WHERE recipient = $1 AND read_at IS NULL AND `+inboxVisible, recipient).Scan(&n)
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

// markAllReadChunk bounds the notifications one MarkAllRead statement
// marks, and so how long it holds their row locks.
const markAllReadChunk = 10_000

// MarkAllRead marks every unread notification of recipient read at at and
// returns how many it marked, markAllReadChunk at a time, each chunk its own
// statement (committed on its own, unless db is a transaction). One
// statement for a user with 300,000 unread held the lock on all of them for
// its whole 1.9 s: the relay's supersede of an older notification of a
// collapse key (which locks it) waited that long, and the relay, which
// expands one message at a time, held up every other user's notifications
// with it. A notification that becomes visible while it runs (just created,
// or its SendAt reached) may or may not be marked. An error after some
// chunks leaves those marked; calling again marks the rest.
//
// The chunks walk the inbox from the newest down (its index's order), each
// starting below the last one picked, so every notification is picked at
// most once and the walk ends. Picking whatever was still unread, a row the
// update leaves unread (a host's trigger keeping notifications as they are,
// a row-level security policy) was picked again by every chunk: with a
// chunk's worth of them, the call never ended and the user's other
// notifications were never marked.
func (r *PostgresNotificationRepository) MarkAllRead(ctx context.Context, recipient string, at time.Time) (int, error) {
	total := 0
	var below *time.Time // the cursor: (created_at, id) of the last notification picked
	var belowID uuid.UUID
	for {
		// The ids as an array, so the update reads each through the
		// primary key (as a join, on a table holding mostly this user's
		// rows, the planner hashed the whole table for every chunk). The
		// update repeats the conditions: a row the relay supersedes, or
		// another call marks, in between is read again once its lock is
		// free, and skipped.
		after, args := "", []any{recipient, at, markAllReadChunk}
		if below != nil {
			after, args = ` AND (created_at, id) < ($4::timestamptz, $5::uuid)`, append(args, *below, belowID)
		}
		var picked, marked int
		var lastAt *time.Time
		var lastID *uuid.UUID
		err := r.db.QueryRow(ctx, `
			WITH chunk AS MATERIALIZED (
				SELECT id, created_at FROM herald_notifications
				WHERE recipient = $1 AND read_at IS NULL AND `+inboxVisible+after+`
				ORDER BY created_at DESC, id DESC LIMIT $3
			), picked AS (
				SELECT ARRAY(SELECT id FROM chunk) AS ids
			), marked AS (
				UPDATE herald_notifications SET read_at = $2
				WHERE id = ANY ((SELECT ids FROM picked)::uuid[]) AND read_at IS NULL AND `+inboxVisible+`
				RETURNING 1
			), last AS (
				SELECT created_at, id FROM chunk ORDER BY created_at, id LIMIT 1
			)
			SELECT cardinality(ids), (SELECT count(*) FROM marked), (SELECT created_at FROM last), (SELECT id FROM last)
			FROM picked`,
			args...).Scan(&picked, &marked, &lastAt, &lastID)
		if err != nil {
			return total, fmt.Errorf("mark all read: %w", err)
		}
		total += marked
		if picked < markAllReadChunk || lastAt == nil || lastID == nil {
			return total, nil
		}
		below, belowID = lastAt, *lastID
	}
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
		key, collapseKey            *string
		until, sendAt, expiresAt    *time.Time
		supersededAt                *time.Time
		options                     *storedOptions
	)
	if err := row.Scan(&id, &recipient, &audience, &typ, &title, &body, &data, &ttl, &createdAt, &readAt,
		&key, &until, &sendAt, &expiresAt, &collapseKey, &supersededAt, &options); err != nil {
		return nil, err
	}
	content := notification.Content{Title: title, Body: body, Data: data, TTL: time.Duration(ttl) * time.Second}
	n := notification.NotificationFromDatabase(id, recipient, audience, typ, content, createdAt, deref(readAt))
	s := notification.DeliverySettings{IdempotencyKey: deref(key), IdempotentUntil: deref(until),
		SendAt: deref(sendAt), SupersededAt: deref(supersededAt),
		Push: notification.PushOptions{CollapseKey: deref(collapseKey), ExpiresAt: deref(expiresAt)}}
	if options != nil {
		s.Push.Android, s.Push.APNs, s.Push.Web = options.Android, options.APNs, options.Web
	}
	n.RestoreDeliverySettings(s)
	return n, nil
}

// deref returns *p, or the zero value for nil.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
