package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/internal/telemetry"
	"github.com/herald-push/herald/notification"
)

// Config configures an Outbox. Zero values mean the documented defaults.
type Config struct {
	// Now gives a notification its provisional creation time, replaced by
	// the database's when it is stored. Defaults to time.Now.
	Now func() time.Time
	// Logger receives watermill's logs. Defaults to discarding.
	Logger *slog.Logger
	// IdempotencyWindow is how long a draft's idempotency key holds when
	// the draft does not say. Defaults to 24h.
	IdempotencyWindow time.Duration
	// Telemetry receives Raise's spans. Defaults to nil, which observes
	// nothing.
	Telemetry *telemetry.Telemetry
}

// Validate reports every invalid field at once.
func (c Config) Validate() error {
	return app.RaiserConfig{IdempotencyWindow: c.IdempotencyWindow}.Validate()
}

// WithDefaults returns c with every zero setting at its default (Now and
// Logger stay nil: New applies theirs).
func (c Config) WithDefaults() Config {
	c.IdempotencyWindow = app.RaiserConfig{IdempotencyWindow: c.IdempotencyWindow}.WithDefaults().IdempotencyWindow
	return c
}

// Outbox raises domain events inside the host's transaction. It is safe for
// concurrent use; make one per process and share it.
type Outbox struct {
	raiser        *app.Raiser
	notifications func(pgx.Tx) app.NotificationWriter
	log           watermill.LoggerAdapter
	tel           *telemetry.Telemetry
}

// New returns an Outbox that turns events into notifications with rules and
// stores them with the writer notificationsIn makes on the host's
// transaction (adapters.NotificationWriterIn). Neither may be nil; register
// every event type before raising.
func New(rules *notification.Rules, notificationsIn func(pgx.Tx) app.NotificationWriter, cfg Config) *Outbox {
	if notificationsIn == nil {
		panic("outbox: New: nil notificationsIn")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Outbox{
		raiser:        app.NewRaiser(rules, app.RaiserConfig{Now: cfg.Now, IdempotencyWindow: cfg.IdempotencyWindow}),
		notifications: notificationsIn,
		log:           watermill.NewSlogLogger(logger),
		tel:           cfg.Telemetry,
	}
}

// Raise applies the rules to events and writes the notifications and the
// events in tx, the host's own open transaction: a few round trips
// however many events are raised (one statement per 5,000 notifications, one
// per 1,000 for the outbox). It neither commits nor rolls back tx. If tx
// rolls back, nothing is ever sent; if it commits, every notification is
// delivered to every device its recipient has when the relay expands it.
//
// It is all or nothing. Invalid input (an event type with no rule, an
// invalid event, an event that does not encode as JSON, a notification over
// FCM's payload limit, a reserved data key, an ExpiresAt the database's
// clock says has passed) fails before anything is written, so tx stays
// usable: errors.Is works with
// notification.ErrUnknownEvent, ErrMalformedEvent, ErrPayloadTooLarge,
// ErrReservedDataKey and the other validation sentinels. A database error
// aborts tx, as any failed statement does, so it can only roll back. (No
// savepoint is taken: a host raising many times in one transaction would
// pile up subtransactions, which slow down every backend once a transaction
// holds more than 64.) The relay expands what Raise accepted without
// validating the events again. It returns the notifications created, and
// for a draft whose idempotency key its recipient already holds, the
// notification raised first with that key (nothing is written for it: a
// raise whose notifications are all such duplicates writes no outbox
// event; a partly duplicate one writes its event, whose duplicate ids the
// relay finds no row for and skips). Two transactions raising the same key
// at once resolve to one notification: the second waits for the first to
// end, then returns the first's notification if it committed, or inserts
// its own if it rolled back. (Under REPEATABLE READ or SERIALIZABLE the
// second fails with a serialization error instead, to be retried as any
// such failure.)
//
// When traced, Raise's span context travels with what it writes (the W3C
// traceparent in each outbox message's metadata and in each notification),
// for the relay's and the pushes' spans to link to.
func (o *Outbox) Raise(ctx context.Context, tx pgx.Tx, events ...notification.Event) ([]*notification.Notification, error) {
	ctx, span := o.tel.StartRaise(ctx)
	ns, err := o.raiser.Raise(ctx, raiseTx{tx: tx, notifications: o.notifications(tx), log: o.log}, events...)
	span.EndRaise(len(events), len(ns), err)
	return ns, err
}

// raiseTx writes raised events into the host's transaction.
type raiseTx struct {
	tx            pgx.Tx
	notifications app.NotificationWriter
	log           watermill.LoggerAdapter
}

// Write implements app.RaiseTx: it encodes the outbox messages and makes
// the publisher first, so only the database can fail once it has written.
func (r raiseTx) Write(ctx context.Context, ns []*notification.Notification, raised []app.Raised) ([]*notification.Notification, error) {
	payloads, err := encodeEnvelopes(raised)
	if err != nil {
		return nil, err
	}
	msgs, err := newMessages(payloads)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		m.SetContext(ctx)
		telemetry.Inject(ctx, m.Metadata)
	}
	pub, err := newPublisher(r.tx, r.log)
	if err != nil {
		return nil, err
	}
	stored, err := r.notifications.Add(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("store notifications: %w", err)
	}
	created := 0
	for i, n := range stored {
		if n == ns[i] {
			created++
		}
	}
	if created == 0 {
		return stored, nil // all duplicates: nothing to relay
	}
	if err := pub.Publish(topic, msgs...); err != nil {
		return nil, fmt.Errorf("append events to outbox: %w", err)
	}
	return stored, nil
}

// Now implements app.RaiseTx. statement_timestamp() is the time the
// database stamps on the notifications' creation (see
// adapters.PostgresNotificationRepository.Add): read in the host's
// transaction, it is later than now(), which stays at the transaction's
// start however long the host took.
func (r raiseTx) Now(ctx context.Context) (time.Time, error) {
	var now time.Time
	if err := r.tx.QueryRow(ctx, `SELECT statement_timestamp()`).Scan(&now); err != nil {
		return time.Time{}, err
	}
	return now, nil
}

// newMessages makes one outbox message per payload, each with a new
// time-ordered id.
func newMessages(payloads [][]byte) ([]*message.Message, error) {
	msgs := make([]*message.Message, len(payloads))
	for i, p := range payloads {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("new message id: %w", err)
		}
		msgs[i] = message.NewMessage(id.String(), p)
	}
	return msgs, nil
}

// newPublisher returns a publisher appending to the outbox in tx.
func newPublisher(tx pgx.Tx, log watermill.LoggerAdapter) (*wsql.Publisher, error) {
	pub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{
		SchemaAdapter: wsql.DefaultPostgreSQLSchema{},
		// The schema is created by the migrations, never in a transaction.
		AutoInitializeSchema: false,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("outbox publisher: %w", err)
	}
	return pub, nil
}

// publish appends messages to the outbox topic in tx, in one statement.
func publish(tx pgx.Tx, log watermill.LoggerAdapter, msgs []*message.Message) error {
	pub, err := newPublisher(tx, log)
	if err != nil {
		return err
	}
	if err := pub.Publish(topic, msgs...); err != nil {
		return fmt.Errorf("publish to outbox: %w", err)
	}
	return nil
}
