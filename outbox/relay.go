package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// ConsumerGroup is the relay's watermill consumer group.
const ConsumerGroup = "herald_relay"

// handlerMargin is how long before the ack deadline the handler stops
// using the subscriber's transaction.
const handlerMargin = time.Second

// RelayConfig configures a Relay. Zero values mean the documented defaults.
type RelayConfig struct {
	// PollInterval is how often the relay looks for committed events when
	// it found none. Defaults to 25ms.
	PollInterval time.Duration
	// BatchSize is how many outbox messages one subscriber transaction reads.
	// Defaults to 100.
	BatchSize int
	// AckDeadline bounds how long one message may take, retries included,
	// before the subscriber gives up its transaction and starts a new one.
	// The handler takes milliseconds; the deadline matters when the
	// connection dies mid-message, since every retry inside the dead
	// transaction fails until it passes. Defaults to 3s.
	AckDeadline time.Duration
	// LongTransactionWarning: the relay only sees events committed before
	// the oldest transaction still open anywhere in the cluster (facts.md),
	// so one long write transaction delays every event. When a transaction
	// with an assigned xid has been open longer than this, the relay logs a
	// warning naming its backend pid and age, and Stats reports the oldest.
	// Herald's own relay transactions are never reported. Defaults to 5s.
	LongTransactionWarning time.Duration
	// RestoreCheckInterval is how often the running relay checks that the
	// consumer group's stored position is not ahead of the database's
	// transaction ids, as it is after a logical dump and restore or a
	// logical-replication cut-over (it also checks at each start). One
	// cheap query that takes no lock. Defaults to 10s.
	RestoreCheckInterval time.Duration
	// Logger receives the relay's logs. Defaults to discarding.
	Logger *slog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// Validate reports every invalid field at once.
func (c RelayConfig) Validate() error {
	var errs []error
	if c.PollInterval < 0 {
		errs = append(errs, errors.New("PollInterval must not be negative"))
	}
	if c.BatchSize < 0 {
		errs = append(errs, errors.New("BatchSize must not be negative"))
	}
	if c.AckDeadline != 0 && c.AckDeadline <= 2*handlerMargin {
		errs = append(errs, fmt.Errorf("AckDeadline must be longer than %s", 2*handlerMargin))
	}
	if c.LongTransactionWarning < 0 {
		errs = append(errs, errors.New("LongTransactionWarning must not be negative"))
	}
	if c.RestoreCheckInterval < 0 {
		errs = append(errs, errors.New("RestoreCheckInterval must not be negative"))
	}
	return errors.Join(errs...)
}

func (c *RelayConfig) setDefaults() {
	if c.PollInterval == 0 {
		c.PollInterval = 25 * time.Millisecond
	}
	if c.BatchSize == 0 {
		c.BatchSize = 100
	}
	if c.LongTransactionWarning == 0 {
		c.LongTransactionWarning = 5 * time.Second
	}
	if c.AckDeadline == 0 {
		c.AckDeadline = 3 * time.Second
	}
	if c.RestoreCheckInterval == 0 {
		c.RestoreCheckInterval = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// RelayStats counts what a Relay did since it was made.
type RelayStats struct {
	Messages, Events, Deliveries, DeadLetters int64
	// OldestTransactionAge is the age of the oldest open write transaction
	// in the cluster at the last check (every second), and
	// OldestTransactionPID its backend; zero when there is none. Events
	// committed after it started wait until it ends. Herald's relay
	// transactions are left out. Without pg_read_all_stats, the age of
	// another role's transaction is measured from when the relay first saw
	// it (so it may be younger than the truth).
	OldestTransactionAge time.Duration
	OldestTransactionPID int32
	// RestoredOffsetsRepaired counts how many times the relay found the
	// consumer group's stored position ahead of the database's transaction
	// ids (a logical restore or cut-over) and reset it.
	RestoredOffsetsRepaired int64
}

// Relay moves committed events from the outbox to deliveries. Several
// processes may each run one: watermill's consumer group hands every message
// to exactly one of them, and the expansion commits with the ack. Run it in
// one goroutine; Stats is safe for concurrent use.
type Relay struct {
	pool  *pgxpool.Pool
	rules *notification.Rules
	cfg   RelayConfig
	log   *slog.Logger

	stats struct {
		messages, events, deliveries, deadLetters, oldestTxAge, offsetsRepaired atomic.Int64
		oldestTxPID                                                             atomic.Int32
	}
	// known holds the event types that have a rule, read once in Run
	// (rules are registered before use).
	known    map[string]bool
	failures failureCounter
}

// NewRelay returns a relay reading the outbox in pool's database and
// checking events against rules. pool and rules must not be nil.
func NewRelay(pool *pgxpool.Pool, rules *notification.Rules, cfg RelayConfig) (*Relay, error) {
	if pool == nil || rules == nil {
		panic("outbox: NewRelay: nil pool or rules")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid relay config: %w", err)
	}
	cfg.setDefaults()
	return &Relay{pool: pool, rules: rules, cfg: cfg, log: cfg.Logger.With("component", "herald_relay")}, nil
}

// Stats returns the counters so far.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Messages: r.stats.messages.Load(), Events: r.stats.events.Load(),
		Deliveries: r.stats.deliveries.Load(), DeadLetters: r.stats.deadLetters.Load(),
		OldestTransactionAge:    time.Duration(r.stats.oldestTxAge.Load()),
		OldestTransactionPID:    r.stats.oldestTxPID.Load(),
		RestoredOffsetsRepaired: r.stats.offsetsRepaired.Load(),
	}
}

// Run relays until ctx ends, then closes the router and returns nil. It
// never gives up while ctx lasts: if the database is unreachable (at start
// as later) or the router stops, it logs the error and starts again with
// backoff. Before each start, and every RestoreCheckInterval while it runs,
// it checks that the consumer group's stored position is not ahead of the
// database's transaction ids (see checkRestoredOffsets). Run may be called
// again after it returned.
func (r *Relay) Run(ctx context.Context) error {
	var side sync.WaitGroup
	sideCtx, stopSide := context.WithCancel(ctx)
	defer func() { stopSide(); side.Wait() }()
	side.Add(2)
	go func() {
		defer side.Done()
		r.monitorLongTransactions(sideCtx)
	}()
	go func() {
		defer side.Done()
		r.watchOffsets(sideCtx)
	}()

	// The watermill logger drops to debug once ctx has ended: what the
	// subscriber reports about its cancelled queries then is the shutdown
	// itself, not a problem.
	wlog := watermill.NewSlogLoggerWithLevelMapping(
		slog.New(quietAfter(ctx, r.cfg.Logger.Handler())).With("component", "herald_relay_watermill"),
		map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
	wait := newRetryWait(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		started := time.Now()
		err := r.runOnce(ctx, wlog)
		if ctx.Err() != nil {
			break
		}
		if time.Since(started) > time.Minute {
			wait.reset() // it ran for a while: back off from the start again
		}
		d := wait.next()
		r.log.Error("outbox relay is not running; starting it again", "err", err, "retry_in", d)
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	return nil
}

// runOnce repairs restored offsets, then runs one subscriber and router
// until ctx ends (nil) or they fail (the error).
func (r *Relay) runOnce(ctx context.Context, wlog watermill.LoggerAdapter) error {
	if err := r.checkRestoredOffsets(ctx); err != nil {
		return err
	}
	subscriber, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(r.pool), wsql.SubscriberConfig{
		ConsumerGroup:  ConsumerGroup,
		AckDeadline:    &r.cfg.AckDeadline,
		PollInterval:   r.cfg.PollInterval,
		ResendInterval: time.Second,
		RetryInterval:  time.Second,
		SchemaAdapter:  relaySchema{wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: r.cfg.BatchSize}},
		OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
		// The migrations create the tables.
		InitializeSchema: false,
	}, wlog)
	if err != nil {
		return fmt.Errorf("outbox subscriber: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return fmt.Errorf("outbox router: %w", err)
	}
	r.known = map[string]bool{}
	for _, t := range r.rules.Types() {
		r.known[t] = true
	}
	defer router.Close() //nolint:errcheck // closing a stopped router only reports it stopped
	d := newDrain()
	router.AddNoPublisherHandler("herald_relay", Topic, subscriber, func(msg *message.Message) error {
		if !d.enter() {
			return errStopping
		}
		defer d.leave()
		return r.handle(msg)
	})
	// See drain: ctx reaches the router and subscriber only once no
	// handler is running.
	routerCtx, cancelRouter := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRouter()
	routerDone := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-routerDone:
			return
		}
		<-d.stop() // the handler's own deadline bounds this wait
		// Closing commits what was acked. It waits for the subscriber's
		// query in progress; if that hangs (a dead connection), the
		// router's context cancels it after one ack deadline.
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			_ = subscriber.Close() // it never fails
		}()
		select {
		case <-closed:
		case <-time.After(r.cfg.AckDeadline):
		}
		cancelRouter()
		<-closed // prompt once the query in progress is cancelled
	}()
	err = router.Run(routerCtx)
	close(routerDone)
	<-stopped
	if err != nil {
		return fmt.Errorf("outbox relay: %w", err)
	}
	if ctx.Err() == nil {
		return errors.New("outbox relay: router stopped")
	}
	return nil
}

// handle expands one outbox message inside the subscriber's transaction,
// under a savepoint: if a statement fails, the savepoint is rolled back and
// the transaction stays usable.
//
// Input that can never succeed (a payload or metadata that does not decode,
// an event type with no rule) is dead-lettered at once and the message
// acked. A transient database failure (see transient) nacks the message: it
// is redelivered, however often that takes. A deterministic failure is
// retried maxTries times; then the message's events are expanded in
// halves under savepoints (see expandIsolating), and only those that fail
// alone are dead-lettered with the reason, so the good events of the message
// are still delivered and nothing behind it waits any longer.
func (r *Relay) handle(msg *message.Message) error {
	ctx := msg.Context()
	wtx, ok := wsql.TxFromContext(ctx)
	if !ok {
		return errors.New("outbox relay: no subscriber transaction in message context")
	}
	var tx pgx.Tx
	switch t := wtx.(type) {
	case *wsql.PgxTx:
		tx = t.Tx
	case wsql.PgxTx:
		tx = t.Tx
	default:
		return fmt.Errorf("outbox relay: subscriber transaction is %T, not pgx", wtx)
	}
	// watermill-sql gives up on the message at its ack deadline and then
	// commits or rolls back the subscriber's transaction from its own
	// goroutine. The handler must be done with the transaction before that,
	// so its work stops a second earlier; if that moment has passed, it
	// does not touch the transaction at all.
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-handlerMargin))
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("outbox relay: no time left before the ack deadline: %w", err)
	}
	var counts RelayStats
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return r.process(ctx, sp, msg, false, &counts) })
	if err != nil {
		if transient(ctx, err) {
			r.log.Warn("outbox message failed, will retry", "message_uuid", msg.UUID, "err", err)
			return err
		}
		tries := r.failures.fail(msg.UUID)
		if tries < maxTries {
			r.log.Warn("outbox message failed", "message_uuid", msg.UUID, "tries", tries, "err", err)
			return err
		}
		counts = RelayStats{}
		err = pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return r.process(ctx, sp, msg, true, &counts) })
		if err != nil {
			return err // transient: isolation dead-letters every deterministic failure
		}
	}
	r.failures.forget(msg.UUID)
	r.stats.messages.Add(1)
	r.stats.events.Add(counts.Events)
	r.stats.deliveries.Add(counts.Deliveries)
	r.stats.deadLetters.Add(counts.DeadLetters)
	return nil
}

// maxPayloadBytes bounds an outbox message the relay reads. Raise writes at
// most maxNotificationsPerMessage notification ids and the events' JSON; a
// larger payload was not written by Raise. Only its first
// maxDeadPayloadKept bytes are kept in its dead letter.
const (
	maxPayloadBytes    = 16 << 20
	maxDeadPayloadKept = 64 << 10
)

// process expands msg in tx. With isolate, the events are expanded under
// savepoints, halving the set until each failure is down to one event,
// which is dead-lettered if it fails for a deterministic reason (a few
// statements per failing event, however many events the message holds);
// otherwise all events are expanded in one statement and any failure is
// returned.
func (r *Relay) process(ctx context.Context, tx pgx.Tx, msg *message.Message, isolate bool, counts *RelayStats) (err error) {
	defer func() {
		// A panic on one message must not stop the relay or loop forever on
		// redelivery: move the message aside, on a savepoint of its own.
		if p := recover(); p != nil {
			err = pgx.BeginFunc(ctx, tx, func(dl pgx.Tx) error {
				return r.deadLetter(ctx, dl, msg, msg.Payload, fmt.Sprintf("relay panicked: %v", p), counts)
			})
		}
	}()
	if _, bad := msg.Metadata[invalidMetadataKey]; bad { // the raw text is kept in the letter's metadata
		return r.deadLetter(ctx, tx, msg, msg.Payload, "outbox message metadata is not a JSON object of strings", counts)
	}
	if len(msg.Payload) > maxPayloadBytes {
		return r.deadLetter(ctx, tx, msg, msg.Payload[:maxDeadPayloadKept], fmt.Sprintf(
			"outbox message of %d bytes is over the relay's limit of %d (only its first %d bytes are kept)",
			len(msg.Payload), maxPayloadBytes, maxDeadPayloadKept), counts)
	}
	env, decodeErr := decodeEnvelope(msg.Payload)
	if decodeErr != nil {
		return r.deadLetter(ctx, tx, msg, msg.Payload, decodeErr.Error(), counts)
	}
	var known []indexedEvent
	for i, ev := range env.Events {
		// Raise validated the event itself; the relay needs only the
		// notification ids, and that this application knows the type (an
		// event from a newer version waits in the dead letters until the
		// rule is deployed, then is replayed).
		if !r.known[ev.Type] {
			err := fmt.Errorf("event %d: %w: %q", i, notification.ErrUnknownEvent, ev.Type)
			if err := r.deadLetterEvent(ctx, tx, msg, ev, err.Error(), counts); err != nil {
				return err
			}
			continue
		}
		known = append(known, indexedEvent{index: i, event: ev})
	}
	if len(known) == 0 {
		return nil
	}
	if isolate {
		return r.expandIsolating(ctx, tx, msg, known, counts)
	}
	created, err := adapters.NewPostgresDeliveryRepository(tx).Expand(ctx, notificationIDs(known))
	if err != nil {
		return err
	}
	counts.Events += int64(len(known))
	counts.Deliveries += int64(created)
	return nil
}

// indexedEvent is an event with its position in its message.
type indexedEvent struct {
	index int
	event envelopeEvent
}

func notificationIDs(events []indexedEvent) []uuid.UUID {
	var ids []uuid.UUID
	for _, e := range events {
		ids = append(ids, e.event.Notifications...)
	}
	return ids
}

// expandIsolating expands events under a savepoint; if that fails for a
// deterministic reason it rolls the savepoint back and tries each half, down
// to single events, which it dead-letters with the reason. A transient
// failure is returned.
func (r *Relay) expandIsolating(ctx context.Context, tx pgx.Tx, msg *message.Message, events []indexedEvent, counts *RelayStats) error {
	var created int
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		var err error
		created, err = adapters.NewPostgresDeliveryRepository(sp).Expand(ctx, notificationIDs(events))
		return err
	})
	switch {
	case err == nil:
		counts.Events += int64(len(events))
		counts.Deliveries += int64(created)
		return nil
	case transient(ctx, err):
		return err
	case len(events) == 1:
		reason := fmt.Sprintf("event %d: expansion failed %d times: %v", events[0].index, maxTries, err)
		return r.deadLetterEvent(ctx, tx, msg, events[0].event, reason, counts)
	}
	mid := len(events) / 2
	if err := r.expandIsolating(ctx, tx, msg, events[:mid], counts); err != nil {
		return err
	}
	return r.expandIsolating(ctx, tx, msg, events[mid:], counts)
}

// deadLetterEvent sets one event of msg aside, in the form in which it can
// be replayed on its own; the other events of msg proceed.
func (r *Relay) deadLetterEvent(ctx context.Context, tx pgx.Tx, msg *message.Message, ev envelopeEvent, reason string, counts *RelayStats) error {
	part, err := encodeEvent(ev)
	if err != nil {
		part = msg.Payload
	}
	return r.deadLetter(ctx, tx, msg, part, reason, counts)
}

func (r *Relay) deadLetter(ctx context.Context, tx pgx.Tx, msg *message.Message, payload []byte, reason string, counts *RelayStats) error {
	if len(payload) > maxPayloadBytes {
		payload = payload[:maxDeadPayloadKept]
	}
	dl := adapters.DeadLetter{
		Topic: Topic, MessageUUID: msg.UUID, Payload: payload, Metadata: msg.Metadata,
		Reason: reason, CreatedAt: r.cfg.Now(),
	}
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		_, err := adapters.NewPostgresDeadLetterRepository(sp).Add(ctx, dl)
		return err
	})
	if err != nil && !transient(ctx, err) {
		// Whatever the metadata held, the letter itself must be stored.
		dl.Metadata = nil
		_, err = adapters.NewPostgresDeadLetterRepository(tx).Add(ctx, dl)
	}
	if err != nil {
		return err
	}
	counts.DeadLetters++
	r.log.Warn("outbox message moved to dead letters", "message_uuid", msg.UUID, "reason", reason)
	return nil
}
