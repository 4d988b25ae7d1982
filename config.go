package herald

import (
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
)

// Config configures Herald: everything a host sets, in one place. The zero
// value is a working configuration; each field documents its default, and
// WithDefaults shows the values in effect. Validate (run by New) names
// every bad field by its path ("Sender.BatchSize must not be negative").
type Config struct {
	// Relay configures the outbox relay, which turns committed events into
	// deliveries.
	Relay RelayConfig
	// Sender configures claiming, concurrency, rate and retries.
	Sender SenderConfig
	// FCM configures request deadlines and the circuit breaker.
	FCM FCMConfig
	// Broadcast configures how broadcasts are expanded into deliveries.
	Broadcast BroadcastConfig
	// Housekeeping configures what is deleted when, and how often.
	Housekeeping HousekeepingConfig
	// Fleet configures the heartbeats of several Herald processes on one
	// database (see "Running several replicas" in the README).
	Fleet FleetConfig
	// Raise configures what Raise decides for the drafts.
	Raise RaiseConfig
	// Pooler says how the pool reaches Postgres (directly, or through a
	// pooler in transaction mode such as PgBouncer) and where Herald may
	// LISTEN for new deliveries.
	Pooler PoolerConfig
	// Logger receives every part's logs. Tokens and message bodies are
	// never logged, and each value of a record is cut to 1 KiB (Herald
	// wraps the handler). Defaults to discarding.
	Logger *slog.Logger
	// Now is the application's clock. It stamps the time a notification is
	// read (Inbox MarkRead and MarkAllRead), device token registrations
	// and dead letters, and times local waits (what is left of a lease,
	// also measured on Go's monotonic clock so that a step back never
	// stretches it; pauses after FCM's alarms). Everything one replica's
	// clock would decide for the others' users is the database's clock's
	// call, so replicas whose clocks disagree by minutes still agree: a
	// notification's creation time (the inbox's order, the newest of a
	// collapse key; Raise returns it as stored), its idempotency window,
	// whether its SendAt or ExpiresAt has passed, what is due, when a lease
	// ends and how old a row is for housekeeping. The fleet's heartbeats,
	// leadership and fencing (see Fleet) run on Go's monotonic clock
	// whatever Now says. Defaults to time.Now.
	Now func() time.Time
	// MeterProvider receives Herald's metrics (see "Metrics and traces" in
	// the README for their names). Defaults to OpenTelemetry's global
	// provider, a no-op unless the host set one.
	MeterProvider metric.MeterProvider
	// TracerProvider receives Herald's spans: Raise, the relay's handling
	// of each outbox message, and each push, the latter two linked to the
	// first. Defaults to OpenTelemetry's global provider, a no-op unless
	// the host set one.
	TracerProvider trace.TracerProvider
}

// RelayConfig configures the outbox relay.
type RelayConfig struct {
	// PollInterval is how often the relay looks for committed events when
	// it found none. Defaults to 25ms.
	PollInterval time.Duration
	// BatchSize is how many outbox messages one subscriber transaction
	// reads. Defaults to 100.
	BatchSize int
	// BatchBytes bounds the payload bytes one subscriber transaction reads
	// (the first message always): a message may carry 1,000 notifications,
	// so without it a backlog of large raises is read 100 messages, 15 MB
	// or more, at a time. Defaults to 1 MiB.
	BatchBytes int
	// AckDeadline bounds how long one message may take, retries included,
	// before the subscriber gives up its transaction and starts a new one.
	// The handler takes milliseconds; the deadline matters when the
	// connection dies mid-message, since every retry inside the dead
	// transaction fails until it passes. It must be longer than 2s.
	// Defaults to 3s.
	AckDeadline time.Duration
	// LongTransactionWarning: the relay only sees events committed before
	// the oldest transaction still open anywhere in the cluster, so one long
	// write transaction delays every event. When a transaction with an
	// assigned xid has been open longer than this, the relay logs a warning
	// naming its backend pid and age, and Stats reports the oldest. Herald's
	// own relay transactions are never reported. Defaults to 5s.
	LongTransactionWarning time.Duration
	// RestoreCheckInterval is how often the running relay checks that its
	// stored position is not ahead of the database's transaction ids, as it
	// is after a logical dump and restore or a logical-replication cut-over
	// (it also checks at each start). One cheap query that takes no lock.
	// Defaults to 10s.
	RestoreCheckInterval time.Duration
}

// SenderConfig configures the sender, which claims due deliveries and
// pushes them.
type SenderConfig struct {
	// MaxInFlight, when set, is the number of pushes in flight at once, a
	// hard bound: throughput is about MaxInFlight divided by FCM's round
	// trip. Unset (0, the default), the sender finds the concurrency that
	// reaches RatePerMinute at the round trip it measures (rate per second
	// × round trip, with headroom), starting at 32 and never above
	// InFlightCeiling, and backs off by a tenth, at most once a round trip,
	// while FCM answers 5xx (the SDK's own retries included) or a
	// project-wide QUOTA_EXCEEDED, or while the round trip is more than
	// twice its recent baseline (see "Concurrency" in the README).
	// Stats().Sender.InFlightLimit shows the limit in effect.
	MaxInFlight int
	// InFlightCeiling caps the adaptive concurrency when MaxInFlight is
	// unset; it is ignored when MaxInFlight is set. Reaching a rate R per
	// second at a round trip T takes about 1.5 × R × T pushes in flight:
	// the default reaches 5,000/s up to a 250 ms round trip and 10,000/s
	// up to 130 ms. Defaults to 2,048.
	InFlightCeiling int
	// BatchSize is how many deliveries one claim takes and one record writes
	// at most. Defaults to 500.
	BatchSize int
	// RatePerMinute caps pushes per minute across every Herald process
	// running on the database: the FCM project's budget, shared through a
	// token bucket in Postgres (FCM allows a project 600,000). Give every
	// process the same value. In any one second the fleet pushes at most
	// RatePerMinute/60 × (1.01 + 0.004 × processes). Defaults to 600,000.
	RatePerMinute int
	// Lease is how long a claim holds a delivery. A sender that dies leaves
	// its claims to expire; then another sender takes them. A claimed
	// delivery is pushed only while at least half its lease remains, so the
	// lease must be at least twice FCM.SendTimeout. Defaults to 1 minute.
	Lease time.Duration
	// PollInterval is how often an idle sender looks for due deliveries when
	// nothing wakes it. Defaults to 500ms.
	PollInterval time.Duration
	// FlushInterval is the longest an outcome waits before being recorded.
	// Defaults to 100ms.
	FlushInterval time.Duration
	// Retry decides when transient failures are retried. Each zero field
	// takes its default: MaxAttempts 12, BaseDelay 10s (after the SDK's own
	// retries end), MaxDelay 1h.
	Retry notification.RetryPolicy
	// CircuitOpenPause is how long sending pauses when the circuit breaker
	// refuses a push. Defaults to 1s.
	CircuitOpenPause time.Duration
	// QuotaPause is how long all sending pauses when QUOTA_EXCEEDED is
	// project-wide (see QuotaDevices), and how long a throttled device's
	// other pushes are held, when FCM sent no Retry-After. Defaults to 5s.
	QuotaPause time.Duration
	// QuotaDevices and QuotaWindow tell a project-wide QUOTA_EXCEEDED from
	// one device over its own rate (240 a minute or 5,000 an hour on
	// Android): FCM answers both alike. All sending pauses (for Retry-After,
	// or QuotaPause) only when QuotaDevices distinct devices were throttled
	// among the last 2×QuotaDevices answers, all within QuotaWindow.
	// Otherwise only the throttled device waits: its delivery is retried no
	// sooner than Retry-After, and its other pushes are held (released
	// unattempted) for Retry-After or QuotaPause; every other push goes on.
	// QuotaDevices 1 pauses all sending on every QUOTA_EXCEEDED; at most
	// 1000. Each process decides from the answers it saw; a project-wide
	// pause it decides on pauses every process on the database (at their
	// next grant of send budget, within 100 ms). Defaults to 3.
	QuotaDevices int
	// QuotaWindow: see QuotaDevices. Defaults to 2s.
	QuotaWindow time.Duration
	// PlatformPause is how long one platform's pushes pause after FCM says
	// its APNs (ios) or web push (web) credentials were rejected
	// (THIRD_PARTY_AUTH_ERROR). Meanwhile that platform's pushes are
	// released unattempted, due when the pause ends, and the rejected
	// delivery is retried then (its attempt counted), so an operator who
	// fixes the key retries nothing by hand. When the pause ends one probe
	// push goes out: rejected again, the pause doubles, up to
	// PlatformMaxPause; any success on that platform ends it. Other
	// platforms go on at full speed; a message of unknown platform ("") is
	// a platform of its own. Defaults to 10s.
	PlatformPause time.Duration
	// PlatformMaxPause caps the doubling of PlatformPause. Defaults to 10
	// minutes (or PlatformPause, if longer).
	PlatformMaxPause time.Duration
	// AlarmLogInterval is how often at most one kind of alarm or failure
	// (a configuration alarm per code and platform, throttling, failed
	// deliveries per code) is logged: the first at once, the following
	// ones counted into the next line of that kind, whose "count" says how
	// many events it stands for. Defaults to 10s.
	AlarmLogInterval time.Duration
	// DevicePerMinute and DevicePerHour cap the pushes to one device token,
	// whichever sender pushes them: FCM's documented limits for one
	// Android device, beyond which it answers QUOTA_EXCEEDED. The excess
	// is not dropped: it waits, due when the device's minute or hour
	// window ends, while other devices go on at full speed. The counts are
	// kept in Postgres (herald_device_counts), one row per device (keyed
	// by a 64-bit hash of its token, so two tokens that collide share one
	// limit), written by each claim. Negative turns a limit off; both negative turns the
	// counting off. Default to 240 and 5,000.
	DevicePerMinute int
	// DevicePerHour: see DevicePerMinute.
	DevicePerHour int
}

// FCMConfig configures the requests to FCM and the circuit breaker in the
// FCM client's transport.
type FCMConfig struct {
	// SendTimeout is the deadline of one push, the SDK's own retries
	// included (the SDK's http.Client has none). Defaults to 20s.
	SendTimeout time.Duration
	// BreakerFailures opens the circuit breaker: that many consecutive
	// failed HTTP attempts, or at least that many failed attempts making up
	// half or more of the attempts answered in the last second. The breaker
	// sees every attempt, the SDK's own retries included. A failed attempt
	// is a 5xx, a timeout, a network error, or our own credentials or
	// project rejected; per-token and per-message verdicts, 429s, and
	// attempts Herald cancelled never count. Defaults to 5.
	BreakerFailures uint32
	// BreakerOpenFor is how long the breaker stays open before it lets probe
	// requests through. Defaults to 10s.
	BreakerOpenFor time.Duration
	// BreakerProbes is how many requests a half-open breaker lets through;
	// if all succeed it closes, and the first that fails opens it again.
	// Defaults to 3.
	BreakerProbes uint32
	// RampMax ends the ramp. At the start one request may be in flight
	// until one succeeds (so a cold burst shares one HTTP/2 connection),
	// then requests are no longer bounded here (Sender.MaxInFlight still
	// is). Each time the breaker opens (so for its probes and the traffic
	// after them), one request may be in flight, then twice as many each
	// time as many attempts as the bound have succeeded, until the bound
	// reaches RampMax and requests are no longer bounded here. Defaults to
	// 256.
	RampMax int
}

// BroadcastConfig configures the expansion of broadcasts into deliveries.
type BroadcastConfig struct {
	// ChunkSize is how many tokens one transaction expands. Defaults to
	// 5,000.
	ChunkSize int
	// PollInterval is how often an idle expander looks for broadcasts when
	// nothing wakes it. Defaults to 1s.
	PollInterval time.Duration
}

// HousekeepingConfig configures the sweeps that keep Herald's tables small.
// Notifications (the inbox) are kept unless ReadRetention or
// UnreadRetention says otherwise. A negative retention turns that sweep
// off.
type HousekeepingConfig struct {
	// Interval is the time between sweeps. Defaults to 10 minutes.
	Interval time.Duration
	// BatchSize is how many rows one statement deletes. Defaults to 5,000.
	BatchSize int
	// OutboxRetention keeps consumed outbox rows this long. Defaults to 1
	// hour.
	OutboxRetention time.Duration
	// DeliveryRetention keeps sent, token-pruned and token-moved deliveries
	// (and finished broadcasts) this long. Defaults to 7 days.
	DeliveryRetention time.Duration
	// FailedRetention keeps failed deliveries and replayed dead letters this
	// long, for operators. Defaults to 30 days.
	FailedRetention time.Duration
	// TokenMaxAge deletes device tokens not seen for this long. Defaults to
	// 270 days (FCM expires Android tokens after 270 days).
	TokenMaxAge time.Duration
	// ReadRetention deletes read notifications (inbox entries, with their
	// deliveries) created longer ago than this, once none of their pushes
	// is still waiting. Defaults to off (-1): the inbox is kept.
	ReadRetention time.Duration
	// UnreadRetention does the same for unread notifications. Defaults to
	// off (-1): the inbox is kept.
	UnreadRetention time.Duration
}

// FleetConfig configures how the Herald processes running on one database
// know one another. Each running Herald registers itself and beats; one that
// stops beating is dead to the others, which take back its claims at once.
// Leadership (housekeeping runs on the leader only) is a lease in Postgres
// on the database's clock, never a session lock.
type FleetConfig struct {
	// HeartbeatInterval is how often a running Herald refreshes its
	// registration, renews or seeks the leader's lease, and (on the
	// leader) frees the claims of dead instances. Defaults to 1s.
	HeartbeatInterval time.Duration
	// DeadAfter is how old an instance's last heartbeat (on the database's
	// clock) makes it dead: it leaves Instances, and its claims are taken
	// over at the leader's next heartbeat rather than at the end of their
	// lease. It is also the leader's lease. A Herald whose own heartbeat
	// has failed for DeadAfter minus one HeartbeatInterval starts no push
	// until one succeeds, so that what the others take over is not pushed
	// twice. At least three heartbeats. Defaults to 5s.
	DeadAfter time.Duration
}

// RaiseConfig configures raising.
type RaiseConfig struct {
	// IdempotencyWindow is how long a draft's IdempotencyKey holds, from
	// the notification's creation by the database's clock (whichever
	// replica raised it), when the draft does not set its own
	// IdempotencyWindow: a raise with the same key and recipient within it
	// returns the first notification and pushes nothing more. At most 30
	// days. Defaults to 24h.
	IdempotencyWindow time.Duration
}

// WithDefaults returns c with every zero field set to its documented
// default: the configuration in effect, to display or check. New applies
// the same defaults; calling it first is never needed.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MeterProvider == nil {
		c.MeterProvider = otel.GetMeterProvider()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	c.Relay = relayFrom(c.relay().WithDefaults())
	c.Sender = senderFrom(c.sender().WithDefaults())
	c.FCM = fcmFrom(c.fcm().WithDefaults())
	c.Broadcast = broadcastFrom(c.broadcast().WithDefaults())
	c.Housekeeping = housekeepingFrom(c.housekeeping().WithDefaults())
	c.Fleet = fleetFrom(c.fleet().WithDefaults())
	c.Raise = raiseFrom(c.raise().WithDefaults())
	c.Pooler = c.Pooler.withDefaults()
	return c
}

// The internal packages keep their own configs, each with its Logger and
// clock; these map Config onto them and back. A nil Logger or Now is left
// nil: each part then applies its own default.

func (c Config) relay() outbox.RelayConfig {
	r := c.Relay
	return outbox.RelayConfig{
		PollInterval: r.PollInterval, BatchSize: r.BatchSize, BatchBytes: r.BatchBytes, AckDeadline: r.AckDeadline,
		LongTransactionWarning: r.LongTransactionWarning, RestoreCheckInterval: r.RestoreCheckInterval,
		Logger: c.Logger, Now: c.Now,
	}
}

func relayFrom(r outbox.RelayConfig) RelayConfig {
	return RelayConfig{
		PollInterval: r.PollInterval, BatchSize: r.BatchSize, BatchBytes: r.BatchBytes, AckDeadline: r.AckDeadline,
		LongTransactionWarning: r.LongTransactionWarning, RestoreCheckInterval: r.RestoreCheckInterval,
	}
}

func (c Config) sender() app.SenderConfig {
	s := c.Sender
	return app.SenderConfig{
		MaxInFlight: s.MaxInFlight, InFlightCeiling: s.InFlightCeiling, BatchSize: s.BatchSize,
		RatePerMinute: s.RatePerMinute, Lease: s.Lease,
		PollInterval: s.PollInterval, FlushInterval: s.FlushInterval, Retry: s.Retry,
		CircuitOpenPause: s.CircuitOpenPause, QuotaPause: s.QuotaPause, QuotaDevices: s.QuotaDevices,
		QuotaWindow: s.QuotaWindow, PlatformPause: s.PlatformPause, PlatformMaxPause: s.PlatformMaxPause,
		AlarmLogInterval: s.AlarmLogInterval, DevicePerMinute: s.DevicePerMinute, DevicePerHour: s.DevicePerHour,
		Logger: c.Logger, Now: c.Now,
	}
}

func senderFrom(s app.SenderConfig) SenderConfig {
	return SenderConfig{
		MaxInFlight: s.MaxInFlight, InFlightCeiling: s.InFlightCeiling, BatchSize: s.BatchSize, RatePerMinute: s.RatePerMinute, Lease: s.Lease,
		PollInterval: s.PollInterval, FlushInterval: s.FlushInterval, Retry: s.Retry,
		CircuitOpenPause: s.CircuitOpenPause, QuotaPause: s.QuotaPause, QuotaDevices: s.QuotaDevices,
		QuotaWindow: s.QuotaWindow, PlatformPause: s.PlatformPause, PlatformMaxPause: s.PlatformMaxPause,
		AlarmLogInterval: s.AlarmLogInterval, DevicePerMinute: s.DevicePerMinute, DevicePerHour: s.DevicePerHour,
	}
}

func (c Config) fcm() adapters.FCMSenderConfig {
	f := c.FCM
	return adapters.FCMSenderConfig{
		SendTimeout: f.SendTimeout, BreakerFailures: f.BreakerFailures, BreakerOpenFor: f.BreakerOpenFor,
		BreakerProbes: f.BreakerProbes, RampMax: f.RampMax,
		Logger: c.Logger,
	}
}

func fcmFrom(f adapters.FCMSenderConfig) FCMConfig {
	return FCMConfig{
		SendTimeout: f.SendTimeout, BreakerFailures: f.BreakerFailures, BreakerOpenFor: f.BreakerOpenFor,
		BreakerProbes: f.BreakerProbes, RampMax: f.RampMax,
	}
}

func (c Config) broadcast() app.BroadcastExpanderConfig {
	return app.BroadcastExpanderConfig{ChunkSize: c.Broadcast.ChunkSize, PollInterval: c.Broadcast.PollInterval, Logger: c.Logger, Now: c.Now}
}

func broadcastFrom(b app.BroadcastExpanderConfig) BroadcastConfig {
	return BroadcastConfig{ChunkSize: b.ChunkSize, PollInterval: b.PollInterval}
}

func (c Config) housekeeping() app.HousekeepingConfig {
	h := c.Housekeeping
	return app.HousekeepingConfig{
		Interval: h.Interval, BatchSize: h.BatchSize, OutboxRetention: h.OutboxRetention,
		DeliveryRetention: h.DeliveryRetention, FailedRetention: h.FailedRetention, TokenMaxAge: h.TokenMaxAge,
		ReadRetention: h.ReadRetention, UnreadRetention: h.UnreadRetention,
		Logger: c.Logger,
	}
}

func housekeepingFrom(h app.HousekeepingConfig) HousekeepingConfig {
	return HousekeepingConfig{
		Interval: h.Interval, BatchSize: h.BatchSize, OutboxRetention: h.OutboxRetention,
		DeliveryRetention: h.DeliveryRetention, FailedRetention: h.FailedRetention, TokenMaxAge: h.TokenMaxAge,
		ReadRetention: h.ReadRetention, UnreadRetention: h.UnreadRetention,
	}
}

// fleet leaves the membership on Go's monotonic clock, not c.Now: whether
// this instance may still push (and still leads) is real time since its last
// heartbeat, which the others judge on the database's clock. An application
// clock that stands still, is moved by a test or steps back would otherwise
// keep a cut-off instance pushing what the others take over.
func (c Config) fleet() app.MembershipConfig {
	return app.MembershipConfig{HeartbeatInterval: c.Fleet.HeartbeatInterval, DeadAfter: c.Fleet.DeadAfter,
		Logger: c.Logger}
}

func fleetFrom(f app.MembershipConfig) FleetConfig {
	return FleetConfig{HeartbeatInterval: f.HeartbeatInterval, DeadAfter: f.DeadAfter}
}

func (c Config) raise() outbox.Config {
	return outbox.Config{IdempotencyWindow: c.Raise.IdempotencyWindow, Logger: c.Logger, Now: c.Now}
}

func raiseFrom(o outbox.Config) RaiseConfig {
	return RaiseConfig{IdempotencyWindow: o.IdempotencyWindow}
}
