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
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/internal/backoff"
	"github.com/herald-push/herald/internal/settings"
	"github.com/herald-push/herald/internal/telemetry"
	"github.com/herald-push/herald/notification"
)

// ConsumerGroup is the relay's watermill consumer group.
const ConsumerGroup = "herald_relay"

// handlerMargin is how long before the ack deadline the handler stops
// using the subscriber's transaction.
const handlerMargin = time.Second

// RelayConfig configures a Relay. Zero values mean defaults. Each setting
// is documented, with its default, on herald.RelayConfig, which hosts set.
type RelayConfig struct {
	PollInterval                                              time.Duration
	BatchSize, BatchBytes                                     int
	AckDeadline, LongTransactionWarning, RestoreCheckInterval time.Duration
	// Logger receives the relay's logs. Defaults to discarding.
	Logger *slog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Telemetry receives the relay's spans and metrics. Defaults to nil,
	// which observes nothing.
	Telemetry *telemetry.Telemetry
}

// Validate reports every invalid field at once, in field order.
func (c RelayConfig) Validate() error {
	return errors.Join(
		settings.NotNegative("PollInterval", c.PollInterval),
		settings.NotNegative("BatchSize", c.BatchSize),
		settings.NotNegative("BatchBytes", c.BatchBytes),
		settings.Check("AckDeadline", c.AckDeadline != 0 && c.AckDeadline <= 2*handlerMargin,
			fmt.Sprintf("must be longer than %s", 2*handlerMargin)),
		settings.NotNegative("LongTransactionWarning", c.LongTransactionWarning),
		settings.NotNegative("RestoreCheckInterval", c.RestoreCheckInterval),
	)
}

func (c *RelayConfig) setDefaults() {
	settings.Default(&c.PollInterval, 25*time.Millisecond)
	settings.Default(&c.BatchSize, 100)
	settings.Default(&c.BatchBytes, 1<<20)
	settings.Default(&c.LongTransactionWarning, 5*time.Second)
	settings.Default(&c.AckDeadline, 3*time.Second)
	settings.Default(&c.RestoreCheckInterval, 10*time.Second)
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
	// consumer group's stored position, or outbox rows, ahead of the
	// database's transaction ids (a logical restore or cut-over) and
	// repaired it.
	RestoredOffsetsRepaired int64
}

// Relay moves committed events from the outbox to deliveries. Several
// processes may each run one: watermill's consumer group hands every message
// to exactly one of them, and the expansion commits with the ack. Run it in
// one goroutine; Stats is safe for concurrent use.
type Relay struct {
	pool    *pgxpool.Pool
	handler *app.RelayHandler
	stores  func(pgx.Tx) app.RelayStore
	cfg     RelayConfig
	log     *slog.Logger

	// abandoned is the subscriber transaction the relay gave up on (see
	// abandon): the messages handed over on it are acked unread, since
	// nothing on it can commit.
	abandonedMu sync.Mutex
	abandoned   pgx.Tx

	stats struct {
		messages, events, deliveries, deadLetters, oldestTxAge, offsetsRepaired atomic.Int64
		oldestTxPID                                                             atomic.Int32
	}
}

// NewRelay returns a relay reading the outbox in pool's database. Its
// decisions are app.RelayHandler's, on the event types of rules, with the
// store storesIn makes on each subscriber transaction
// (adapters.RelayStoreIn). None may be nil.
func NewRelay(pool *pgxpool.Pool, rules *notification.Rules, storesIn func(pgx.Tx) app.RelayStore, cfg RelayConfig) (*Relay, error) {
	if pool == nil || rules == nil || storesIn == nil {
		panic("outbox: NewRelay: nil pool, rules or storesIn")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid relay config: %w", err)
	}
	cfg.setDefaults()
	log := cfg.Logger.With("component", "herald_relay")
	handler := app.NewRelayHandler(rules, app.RelayHandlerConfig{Topic: topic, Now: cfg.Now, Logger: log})
	return &Relay{pool: pool, handler: handler, stores: storesIn, cfg: cfg, log: log}, nil
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
	wait := backoff.New(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		started := time.Now()
		err := r.runOnce(ctx, wlog)
		if ctx.Err() != nil {
			break
		}
		if time.Since(started) > time.Minute {
			wait.Reset() // it ran for a while: back off from the start again
		}
		d := wait.Next()
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
		BackoffManager: abandonedRetry{wsql.NewDefaultBackoffManager(r.cfg.PollInterval, time.Second)},
		SchemaAdapter:  relaySchema{DefaultPostgreSQLSchema: wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: r.cfg.BatchSize}, batchBytes: r.cfg.BatchBytes},
		OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
		// The migrations create the tables.
		InitializeSchema: false,
	}, wlog)
	if err != nil {
		return fmt.Errorf("outbox subscriber: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, handlerErrorsReported{wlog})
	if err != nil {
		return fmt.Errorf("outbox router: %w", err)
	}
	defer router.Close() //nolint:errcheck // closing a stopped router only reports it stopped
	d := newDrain()
	router.AddConsumerHandler("herald_relay", topic, subscriber, func(msg *message.Message) error {
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

// handle hands one outbox message to the app.RelayHandler, with a store on
// the subscriber's transaction: what it writes commits with the ack. A nil
// error acks the message (expanded or dead-lettered); an error nacks it, to
// be redelivered.
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
	if r.isAbandoned(tx) {
		return nil // nothing on it can commit, the ack included: see abandon
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
		// Either a message the handler just failed, handed back on the
		// same transaction with what is left of its deadline (the failure
		// was reported then), or a subscriber too slow to hand it over in
		// time: the relay's lag and its long-transaction warning report
		// that. Either way, the message comes again.
		r.log.Debug("outbox message reached the relay too close to its ack deadline; it will be retried",
			"message_uuid", msg.UUID, "ack_deadline", r.cfg.AckDeadline)
		return fmt.Errorf("outbox relay: no time left before the ack deadline: %w", err)
	}
	ctx, span := r.cfg.Telemetry.StartRelay(ctx, msg.UUID, msg.Metadata)
	out, err := r.handler.Handle(ctx, r.stores(tx), relayMessage(msg))
	span.EndRelay(out.Events, out.Deliveries, out.DeadLetters, err)
	if err != nil {
		if tx.Conn().IsClosed() {
			// The subscriber's connection is gone (terminated, cut):
			// nothing this transaction holds can commit, its ack included,
			// so the message comes again in a new one whatever is answered
			// here. An error would have watermill hand it back on the dead
			// transaction until the ack deadline (3 s a cut); an ack fails
			// at once and the subscriber starts a new transaction.
			return nil
		}
		if needsNewTransaction(err) && r.abandon(ctx, tx) {
			return nil
		}
		return err
	}
	r.stats.messages.Add(1)
	r.stats.events.Add(int64(out.Events))
	r.stats.deliveries.Add(int64(out.Deliveries))
	r.stats.deadLetters.Add(int64(out.DeadLetters))
	return nil
}

// needsNewTransaction reports whether err is one that trying again in the
// same transaction cannot clear: a serialization failure (the relay's
// REPEATABLE READ snapshot is older than a row it must change: a user
// reading a notification the relay supersedes, say) or a deadlock.
func needsNewTransaction(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01") // serialization_failure, deadlock_detected
}

// abandon gives up on the subscriber's transaction tx and reports whether it
// did. watermill hands a failed message back on the same transaction, with
// what is left of its ack deadline, and only the deadline rolls it back: a
// failure that only a new transaction clears failed again at every try and
// held up the relay for the whole deadline. Instead the relay fails the
// transaction itself and acks: every message on it is acked unread (nothing
// on it can commit), the ack's own statement fails, the subscriber rolls
// back and, told by abandonedRetry, at once reads the messages again in a
// new transaction. What the transaction had done (the messages before this
// one in its batch) is done again: expansion is idempotent.
//
// The statement runs within the handler's ctx, like the rest of its work on
// tx: at the ack deadline watermill commits or rolls back tx from its own
// goroutine, and a statement still running then (a database slow to
// answer) had two goroutines on one connection. Should ctx end first, pgx
// closes the connection: nothing on it can commit either, and that too
// counts as abandoned.
func (r *Relay) abandon(ctx context.Context, tx pgx.Tx) bool {
	_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'herald relay: transaction abandoned, to be started again'
		USING ERRCODE = 'transaction_rollback'; END $$`)
	if tx.Conn().IsClosed() {
		return true // as in handle: the ack fails at once, and the subscriber starts again
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "40000" { // transaction_rollback
		return false // the statement did not run: the transaction may still commit
	}
	r.abandonedMu.Lock()
	r.abandoned = tx
	r.abandonedMu.Unlock()
	return true
}

func (r *Relay) isAbandoned(tx pgx.Tx) bool {
	r.abandonedMu.Lock()
	defer r.abandonedMu.Unlock()
	return r.abandoned != nil && r.abandoned == tx
}

// abandonedRetry is watermill's backoff, less its wait and its error line
// for the ack of a transaction the relay abandoned (which fails: the
// transaction is aborted): the messages are read again at once, in a new
// transaction.
type abandonedRetry struct {
	wsql.BackoffManager
}

func (b abandonedRetry) HandleError(logger watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25P02" { // in_failed_sql_transaction
		logger.Debug("relay transaction abandoned; reading the messages again in a new one", watermill.LogFields{"err": err.Error()})
		return 0
	}
	return b.BackoffManager.HandleError(logger, noMsg, err)
}

// relayMessage decodes a watermill message for the relay handler. A
// payload over app.MaxOutboxMessageBytes is not decoded: the handler
// dead-letters it unread.
func relayMessage(msg *message.Message) app.RelayMessage {
	m := app.RelayMessage{ID: msg.UUID, Payload: msg.Payload, Metadata: msg.Metadata}
	if _, bad := msg.Metadata[invalidMetadataKey]; bad { // the raw text is kept in the letter's metadata
		m.Malformed = errors.New("outbox message metadata is not a JSON object of strings")
		return m
	}
	if len(msg.Payload) > app.MaxOutboxMessageBytes {
		return m
	}
	if size, ok := oversizedMarker(msg.Payload); ok {
		m.Malformed = fmt.Errorf("outbox message of %d bytes is over the relay's limit of %d; it was not read "+
			"(it stays in the outbox table until housekeeping removes it)", size, app.MaxOutboxMessageBytes)
		return m
	}
	if size, ok := msg.Metadata[oversizedMetadataKey]; ok {
		m.Malformed = fmt.Errorf("outbox message metadata of %s bytes is over the relay's limit of %d; it was not read",
			size, maxMetadataBytes)
		return m
	}
	env, err := decodeEnvelope(msg.Payload)
	if err != nil {
		m.Malformed = err
		return m
	}
	m.Events = make([]app.RelayEvent, len(env.Events))
	for i, ev := range env.Events {
		m.Events[i] = app.RelayEvent{Type: ev.Type, Notifications: ev.Notifications}
	}
	m.EncodeEvent = func(i int) ([]byte, error) { return encodeEvent(env.Events[i]) }
	return m
}
