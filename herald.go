// Package herald makes push notifications reliable for Go monoliths on
// Postgres: a transactional outbox from the host's domain events to Firebase
// Cloud Messaging.
//
// It is the composition root. New wires the pieces of the subpackages:
//
//   - Raise, inside the host's own pgx transaction, turns domain events into
//     notifications (the in-app inbox) and outbox events: a rollback sends
//     nothing (package outbox).
//   - Run relays committed events into one delivery per device token, and
//     sends due deliveries to FCM outside any transaction, with bounded
//     concurrency, a rate limit and a circuit breaker, retrying or pruning by
//     FCM's error class (packages outbox, app, adapters).
//   - Inbox and Tokens serve the app's notification list and device
//     registration (package app).
//   - Operator actions (ListDeliveriesByStatus, ListFailed, RetryFailed,
//     DeadLetters, ReplayDeadLetters...) list and mend what failed, without
//     handing out anything that takes part in sending. The herald command's
//     operator commands call these same methods.
//
// A process that does not send (a web server that only raises, an admin
// page, an operator tool) makes its Herald with a nil FCM client: it
// raises, serves the inbox and tokens and operates, and cannot Run.
//
// Config is the whole configuration, one Logger and one clock included.
// A host imports herald, notification (the domain) and migrations (the
// schema), and package testutil in its tests; every type it names is
// reachable from here, so it never imports app, adapters or outbox.
package herald

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/api/option"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/internal/boundedlog"
	"github.com/herald-push/herald/internal/telemetry"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
)

// Herald is one process's Herald. It is safe for concurrent use. One made
// without an FCM client does not send (see New); the parts that send
// (relay, fcm, sender, expander, housekeeper) are nil in it.
type Herald struct {
	pool        *pgxpool.Pool
	outbox      *outbox.Outbox
	relay       *outbox.Relay
	sender      *app.Sender
	expander    *app.BroadcastExpander
	housekeeper *app.Housekeeper
	fcm         *adapters.FCMSender
	deliveries  *adapters.PostgresDeliveryRepository
	deadLetters *adapters.PostgresDeadLetterRepository
	status      *adapters.PostgresStatusRepository
	inbox       *app.Inbox
	tokens      *app.Tokens
	preferences *app.UserPreferences
	log         *slog.Logger
	pooler      PoolerConfig
	running     atomic.Bool

	// The fleet: the registry every Herald reads (Instances), and this
	// one's membership (nil in a Herald that does not send).
	fleet      *adapters.PostgresFleetRepository
	fleetDB    *fleetDB
	membership *app.Membership
	deadAfter  time.Duration
}

// gaugeInterval is how often at most the database-wide gauges read the
// database, however often a metrics reader collects.
const gaugeInterval = 5 * time.Second

// ErrAlreadyRunning is returned by Run while another Run of the same Herald
// has not returned.
var ErrAlreadyRunning = errors.New("herald: already running")

// ErrNoFCM is returned by Run of a Herald made without an FCM client, which
// raises and operates but does not send.
var ErrNoFCM = errors.New("herald: cannot run without an FCM client: this Herald only raises and operates")

// FCM is Herald's connection to Firebase Cloud Messaging: a firebase
// messaging client whose HTTP transport carries Herald's circuit breaker,
// so that the breaker sees every HTTP attempt, the SDK's own retries
// included. Build it with NewFCM. One FCM serves one Herald: New returns an
// error when given an FCM that already serves another.
type FCM = adapters.FCMClient

// NewFCM builds the FCM client for projectID from the firebase SDK's client
// options.
//
// For real FCM, pass no options to use the standard credentials
// (GOOGLE_APPLICATION_CREDENTIALS, then Application Default Credentials)
// and endpoint (https://fcm.googleapis.com/v1), or pass credentials
// explicitly (option.WithCredentialsFile, option.WithTokenSource...).
// projectID "" means detect it as firebase.NewApp(ctx, nil) does: from
// FIREBASE_CONFIG, the credentials, or GOOGLE_CLOUD_PROJECT.
//
// For the fake FCM in package testutil:
//
//	fcm, err := herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
//
// Options that carry an HTTP client (option.WithHTTPClient) are used as
// given: that client does its own authentication, if any.
func NewFCM(ctx context.Context, projectID string, opts ...option.ClientOption) (*FCM, error) {
	return adapters.NewFCMClient(ctx, projectID, opts...)
}

// New wires Herald on pool (the host's database, migrated with package
// migrations), fcm (from NewFCM; one per Herald) and rules (the host's
// event types and the notifications they cause). pool and rules must not
// be nil. pool's pgx exec mode must describe statements
// (QueryExecModeCacheStatement, pgx's default, or QueryExecModeCacheDescribe
// behind a transaction pooler; see Config.Pooler): New returns
// ErrUnsupportedExecMode otherwise.
//
// fcm may be nil in a process that never sends: a web server that only
// raises events and serves the inbox, an admin page, or an operator tool
// (River's insert-only client). Such a Herald raises, serves Inbox and
// Tokens and offers every operator action, exactly as a sending one does;
// its Run returns ErrNoFCM at once, and its Stats are zero. Another
// process, given an FCM, runs the relay and the sender on the same
// database.
func New(pool *pgxpool.Pool, fcm *FCM, rules *notification.Rules, cfg Config) (*Herald, error) {
	if pool == nil || rules == nil {
		panic("herald: New: nil pool or rules")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid herald config: %w", err)
	}
	if err := checkExecMode(pool.Config().ConnConfig.DefaultQueryExecMode); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Logs quote values Herald does not choose (a database's error, FCM's
	// words, a row written around Herald): no line may grow past what a
	// log shipper keeps.
	log = boundedlog.Logger(log)
	cfg.Logger = log
	deliveries := adapters.NewPostgresDeliveryRepository(pool)
	tel := telemetry.New(telemetry.Config{MeterProvider: cfg.MeterProvider, TracerProvider: cfg.TracerProvider})
	raiseCfg := cfg.raise()
	raiseCfg.Telemetry = tel
	h := &Herald{
		pool:        pool,
		outbox:      outbox.New(rules, adapters.NotificationWriterIn, raiseCfg),
		deliveries:  deliveries,
		deadLetters: adapters.NewPostgresDeadLetterRepository(pool),
		status:      adapters.NewPostgresStatusRepository(pool),
		inbox:       app.NewInbox(adapters.NewPostgresNotificationRepository(pool), cfg.Now),
		tokens:      app.NewTokens(adapters.NewPostgresDeviceTokenRepository(pool), cfg.Now),
		preferences: app.NewUserPreferences(adapters.NewPostgresPreferenceRepository(pool), cfg.Now),
		log:         log,
		deadAfter:   cfg.fleet().WithDefaults().DeadAfter,
		pooler:      cfg.Pooler.withDefaults(),
	}
	// Every Herald, sending or not, shows the database-wide gauges.
	if _, err := tel.ObserveDatabase(deliveries.Gauges, gaugeInterval); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	h.fleetDB = &fleetDB{main: pool}
	h.fleet = adapters.NewPostgresFleetRepository(h.fleetDB)
	if fcm == nil {
		return h, nil
	}
	self := thisInstance()
	membership, err := app.NewMembership(h.fleet, self, cfg.fleet())
	if err != nil {
		return nil, err
	}
	relayCfg := cfg.relay()
	relayCfg.Telemetry = tel
	relay, err := outbox.NewRelay(pool, rules, adapters.RelayStoreIn, relayCfg)
	if err != nil {
		return nil, err
	}
	fcmCfg := cfg.fcm()
	fcmCfg.Telemetry = tel
	pusher, err := adapters.NewFCMSender(fcm, fcmCfg)
	if err != nil {
		return nil, err
	}
	senderCfg := cfg.sender()
	senderCfg.Budget = app.NewFleetBudget(h.fleet, app.FleetBudgetConfig{
		RatePerMinute: senderCfg.WithDefaults().RatePerMinute, Live: membership.Live, Logger: log, Now: cfg.Now,
	})
	senderCfg.Telemetry = tel
	limits := senderCfg.WithDefaults()
	claims := deliveries.ForInstance(self.ID).WithDeviceLimits(
		adapters.DeviceLimits{PerMinute: limits.DevicePerMinute, PerHour: limits.DevicePerHour})
	sender, err := app.NewSender(claims, pusher, senderCfg)
	if err != nil {
		return nil, err
	}
	if _, err := tel.ObserveSender(func() int64 { return sender.Stats().InFlight },
		func() int64 { return sender.Stats().InFlightLimit }, pusher.BreakerState); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	expander, err := app.NewBroadcastExpander(deliveries, cfg.broadcast())
	if err != nil {
		return nil, err
	}
	housekeepingCfg := cfg.housekeeping()
	housekeepingCfg.Leader = membership.Leader
	housekeeper, err := app.NewHousekeeper(adapters.NewPostgresHousekeepingRepository(pool), housekeepingCfg)
	if err != nil {
		return nil, err
	}
	h.relay, h.fcm, h.sender, h.expander, h.housekeeper = relay, pusher, sender, expander, housekeeper
	h.membership = membership
	return h, nil
}

// Raise applies the rules to events and writes the notifications and the
// events in tx, the host's own open transaction, in a few round trips
// however many events are raised. It neither commits nor rolls back tx. If
// tx rolls back, nothing is ever sent; if it commits, every notification is
// delivered to every device its recipient has when the relay expands it.
//
// It is all or nothing. Invalid input (an event type with no rule, an
// invalid event, one over MaxEventBytes, a notification over FCM's payload
// limit, a reserved data key) fails before anything is written, so tx stays
// usable: errors.Is works with notification.ErrUnknownEvent,
// ErrMalformedEvent, ErrTooLong, ErrPayloadTooLarge, ErrReservedDataKey and
// the other validation sentinels. A database error aborts tx, as any failed
// statement does, so it can only roll back. It returns the notifications
// created. On a database that lacks Herald's migrations the error matches
// ErrSchemaBehind (and errors.As a *SchemaError), not only a raw "relation
// does not exist".
func (h *Herald) Raise(ctx context.Context, tx pgx.Tx, events ...notification.Event) ([]*notification.Notification, error) {
	ns, err := h.outbox.Raise(ctx, tx, events...)
	if err != nil {
		return nil, h.explainPooler(h.explainSchema(ctx, err))
	}
	return ns, nil
}

// Run relays, expands broadcasts, sends and sweeps old rows until ctx ends,
// then finishes the pushes in flight, records their outcomes and returns
// nil. While the database is unreachable, at start as later, every part
// logs and retries with backoff: Run returns only when ctx ends. It returns
// ErrAlreadyRunning at once, starting nothing, while another Run of this
// Herald is running; it may be called again after it returned. Run one per
// process; several processes may run it against one database. A Herald
// made without an FCM client returns ErrNoFCM at once.
func (h *Herald) Run(ctx context.Context) error {
	if h.fcm == nil {
		return ErrNoFCM
	}
	if !h.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer h.running.Store(false)
	signals, ok, err := h.deliverySignals(ctx)
	if err != nil {
		return err
	}
	if !ok || !h.waitForSchema(ctx) {
		return nil
	}
	// Registered before the first claim, so that no claim is ever held by
	// an instance the fleet does not know; left after the last outcome is
	// recorded, so that a clean stop leaves no claim to take over.
	defer h.fleetDB.open(ctx)()
	if h.membership.Join(ctx) != nil {
		return nil
	}
	defer h.membership.Leave(ctx)
	beats, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		_ = h.membership.Run(beats)
	}()
	defer func() { stopBeats(); <-beating }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	wg.Add(5)
	go func() {
		defer wg.Done()
		errs[3] = h.housekeeper.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		adapters.ListenForDeliveries(ctx, signals, func() { h.sender.Wake(); h.expander.Wake() }, h.log)
	}()
	go func() {
		defer wg.Done()
		defer cancel()
		errs[2] = h.expander.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		defer cancel() // if the relay stops, stop everything
		errs[0] = h.relay.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		defer cancel()
		errs[1] = h.sender.Run(ctx)
	}()
	wg.Wait()
	return errors.Join(errs...)
}

// Inbox is the in-app notification list.
func (h *Herald) Inbox() *Inbox { return h.inbox }

// Tokens is the device token registry.
func (h *Herald) Tokens() *Tokens { return h.tokens }

// Preferences manages users' push preferences: types muted for push and
// quiet hours in the user's time zone.
func (h *Herald) Preferences() *UserPreferences { return h.preferences }

// Stats is a snapshot of what this process's Herald did.
type Stats struct {
	// Relay counts what the relay did, and reports the oldest open write
	// transaction, which holds every later event back.
	Relay RelayStats
	// Sender counts what the sender did.
	Sender SenderStats
	// Breaker is the FCM circuit breaker's state: "closed", "open" or
	// "half-open".
	Breaker string
}

// Stats returns the counters so far and the circuit breaker's state. A
// Herald made without an FCM client, which never runs, returns the zero
// Stats.
func (h *Herald) Stats() Stats {
	if h.fcm == nil {
		return Stats{}
	}
	return Stats{Relay: h.relay.Stats(), Sender: h.sender.Stats(), Breaker: h.fcm.BreakerState()}
}
