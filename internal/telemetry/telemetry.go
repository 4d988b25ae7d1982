package telemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of Herald's meter and tracer: the
// module path, as OpenTelemetry recommends.
const ScopeName = "github.com/herald-push/herald"

// Attribute keys. Semantic conventions for messaging where they fit
// (messaging.*, error.type), Herald's own under herald.*.
const (
	keyMessagingSystem    = attribute.Key("messaging.system")
	keyMessagingOperation = attribute.Key("messaging.operation.type")
	keyMessagingOpName    = attribute.Key("messaging.operation.name")
	keyMessagingMessageID = attribute.Key("messaging.message.id")
	keyMessagingDest      = attribute.Key("messaging.destination.name")
	keyErrorType          = attribute.Key("error.type")
	keyOutcome            = attribute.Key("herald.push.outcome")
	keyAlarm              = attribute.Key("herald.alarm")
	keyAttemptKind        = attribute.Key("herald.fcm.attempt")
	keyStatus             = attribute.Key("herald.delivery.status")
	keyBreakerState       = attribute.Key("herald.breaker.state")
	keyBreakerFrom        = attribute.Key("herald.breaker.from")
	keyBreakerTo          = attribute.Key("herald.breaker.to")
	keyNotificationID     = attribute.Key("herald.notification.id")
	keyDeliveryID         = attribute.Key("herald.delivery.id")
	keyTokenHash          = attribute.Key("herald.token.hash")
	keyPlatform           = attribute.Key("herald.platform")
	keyAttempt            = attribute.Key("herald.delivery.attempt")
	keyEvents             = attribute.Key("herald.events")
	keyNotifications      = attribute.Key("herald.notifications")
	keyDeliveries         = attribute.Key("herald.deliveries")
	keyDeadLetters        = attribute.Key("herald.dead_letters")
)

// systemFCM is messaging.system of pushes, systemOutbox that of the outbox.
const (
	systemFCM    = "fcm"
	systemOutbox = "herald_outbox"
)

// Config says where telemetry goes. A nil provider means OpenTelemetry's
// global one (otel.GetMeterProvider, otel.GetTracerProvider), a no-op
// unless the host set it.
type Config struct {
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
}

// Telemetry holds Herald's instruments. Its methods are safe for concurrent
// use; a nil *Telemetry observes nothing, so a part built without one (a
// test's) needs no check.
type Telemetry struct {
	tracer trace.Tracer
	meter  metric.Meter

	sent           metric.Int64Counter
	pushDuration   metric.Float64Histogram
	latency        metric.Float64Histogram
	consumed       metric.Int64Counter
	relayDuration  metric.Float64Histogram
	relayLag       metric.Float64Histogram
	relayed        metric.Int64Counter
	deadLetters    metric.Int64Counter
	claimDuration  metric.Float64Histogram
	recordDuration metric.Float64Histogram
	rateWait       metric.Float64Histogram
	transitions    metric.Int64Counter
	alarms         metric.Int64Counter
	attempts       metric.Int64Counter
	attemptSets    [attemptKinds]options

	// Precomputed attribute options: a push records with a set made once
	// per outcome and error class, so the hot path allocates none.
	mu        sync.RWMutex
	pushSets  map[pushKey]options
	alarmSets map[string]options
	sendOpts  options // messaging.system=fcm, messaging.operation.type=send
	relayOpts options // messaging.system=herald_outbox, process
}

type pushKey struct{ outcome, errorType string }

// options is one attribute set as ready-made options for counters and
// histograms.
type options struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

func newOptions(kvs ...attribute.KeyValue) options {
	o := metric.WithAttributeSet(attribute.NewSet(kvs...))
	return options{add: []metric.AddOption{o}, rec: []metric.RecordOption{o}}
}

// maxSets bounds the attribute sets made for error classes and alarms: an
// unexpected code past it is counted as "other".
const maxSets = 256

// New makes Herald's instruments on cfg's providers.
func New(cfg Config) *Telemetry {
	mp, tp := cfg.MeterProvider, cfg.TracerProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	m := mp.Meter(ScopeName)
	t := &Telemetry{
		tracer:    tp.Tracer(ScopeName),
		meter:     m,
		pushSets:  map[pushKey]options{},
		alarmSets: map[string]options{},
		sendOpts:  newOptions(keyMessagingSystem.String(systemFCM), keyMessagingOperation.String("send")),
		relayOpts: newOptions(keyMessagingSystem.String(systemOutbox), keyMessagingOperation.String("process")),
	}
	// Units follow OpenTelemetry's guidelines: seconds for durations, a
	// {curly} annotation for counts.
	t.sent = counter(m, "messaging.client.sent.messages", "{message}",
		"Pushes sent to FCM, by outcome (the delivery's status after the push) and error.type (FCM's error code or Herald's class)")
	t.pushDuration = histogram(m, "messaging.client.operation.duration", "s",
		"Duration of one push to FCM, the SDK's own retries included, by outcome and error.type")
	t.latency = histogram(m, "herald.delivery.latency", "s",
		"Time from Raise (or, for a scheduled notification, its send time) to FCM accepting the push (raise and push clocks; the first delivery attempt's queueing and retries included)", latencyBuckets...)
	t.consumed = counter(m, "messaging.client.consumed.messages", "{message}",
		"Outbox messages the relay handled (expanded or dead-lettered)")
	t.relayDuration = histogram(m, "messaging.process.duration", "s",
		"Duration of the relay's handling of one outbox message")
	t.relayLag = histogram(m, "herald.relay.lag", "s",
		"Time from Raise to the relay expanding the outbox message into deliveries", latencyBuckets...)
	t.relayed = counter(m, "herald.relay.deliveries", "{delivery}", "Deliveries the relay created")
	t.deadLetters = counter(m, "herald.dead_letters", "{message}", "Outbox messages or events the relay set aside as dead letters")
	t.claimDuration = histogram(m, "herald.sender.claim.duration", "s", "Duration of one claim of due deliveries")
	t.recordDuration = histogram(m, "herald.sender.record.duration", "s", "Duration of recording one batch of push outcomes")
	t.rateWait = histogram(m, "herald.sender.rate_limit.wait", "s",
		"Time a push waited for the rate limit: the fleet's shared budget and this process's limiter (recorded only when it waited)")
	t.transitions = counter(m, "herald.breaker.transitions", "{transition}", "Circuit breaker state changes, by from and to")
	t.attempts = counter(m, "herald.fcm.attempts", "{attempt}",
		"HTTP attempts to FCM as the circuit breaker judged them, the SDK's own retries included, by herald.fcm.attempt: answered (FCM working, whatever its verdict on the message), failed (5xx, timeout, network, our credentials), cancelled (by Herald), refused (by the open breaker, never sent)")
	for k, name := range attemptNames {
		t.attemptSets[k] = newOptions(keyAttemptKind.String(name))
	}
	t.alarms = counter(m, "herald.alarms", "{alarm}",
		"Alarms raised by the sender (configuration alarms, throttling, failed deliveries), by herald.alarm class, each counted once however they are aggregated in the logs")
	return t
}

// Meter is the meter the instruments were made on, for observable gauges.
func (t *Telemetry) Meter() metric.Meter { return t.meter }

func counter(m metric.Meter, name, unit, desc string) metric.Int64Counter {
	c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	if err != nil { // a provider that refuses returns a usable no-op too
		otel.Handle(err)
	}
	return c
}

// Bucket boundaries in seconds: OpenTelemetry's default ones (0 to
// 10,000) suit milliseconds. Durations of one operation span a millisecond
// to the SDK's retries (tens of seconds); latencies from a raise reach the
// retry ladder's hours.
var (
	durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	latencyBuckets  = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
)

func histogram(m metric.Meter, name, unit, desc string, buckets ...float64) metric.Float64Histogram {
	if len(buckets) == 0 {
		buckets = durationBuckets
	}
	h, err := m.Float64Histogram(name, metric.WithUnit(unit), metric.WithDescription(desc),
		metric.WithExplicitBucketBoundaries(buckets...))
	if err != nil {
		otel.Handle(err)
	}
	return h
}

// pushSet returns the options for a push's outcome and error class.
func (t *Telemetry) pushSet(outcome, errorType string) options {
	key := pushKey{outcome, errorType}
	t.mu.RLock()
	o, ok := t.pushSets[key]
	t.mu.RUnlock()
	if ok {
		return o
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if o, ok := t.pushSets[key]; ok {
		return o
	}
	if len(t.pushSets) >= maxSets {
		errorType = "other"
	}
	kvs := []attribute.KeyValue{keyMessagingSystem.String(systemFCM), keyMessagingOperation.String("send"),
		keyMessagingOpName.String("send"), keyOutcome.String(outcome)}
	if errorType != "" {
		kvs = append(kvs, keyErrorType.String(errorType))
	}
	o = newOptions(kvs...)
	if len(t.pushSets) < maxSets {
		t.pushSets[key] = o
	}
	return o
}

// Alarm counts one alarm of class (the sender's alarm kind:
// "sender_id_mismatch", "platform_auth:ios", "delivery_failed:INTERNAL"...).
func (t *Telemetry) Alarm(class string) {
	if t == nil {
		return
	}
	t.mu.RLock()
	o, ok := t.alarmSets[class]
	t.mu.RUnlock()
	if !ok {
		t.mu.Lock()
		if o, ok = t.alarmSets[class]; !ok {
			if len(t.alarmSets) >= maxSets {
				class = "other"
			}
			o = newOptions(keyAlarm.String(class))
			if len(t.alarmSets) < maxSets {
				t.alarmSets[class] = o
			}
		}
		t.mu.Unlock()
	}
	t.alarms.Add(context.Background(), 1, o.add...)
}

// Attempt is how the FCM client's circuit breaker judged one HTTP attempt.
type Attempt int

// The kinds of attempt.
const (
	AttemptAnswered Attempt = iota
	AttemptFailed
	AttemptCancelled
	AttemptRefused
	attemptKinds
)

var attemptNames = [attemptKinds]string{"answered", "failed", "cancelled", "refused"}

// FCMAttempt counts one HTTP attempt to FCM.
func (t *Telemetry) FCMAttempt(a Attempt) {
	if t == nil || a < 0 || a >= attemptKinds {
		return
	}
	t.attempts.Add(context.Background(), 1, t.attemptSets[a].add...)
}

// ClaimDone records one claim that started at start.
func (t *Telemetry) ClaimDone(start time.Time) {
	if t == nil {
		return
	}
	t.claimDuration.Record(context.Background(), time.Since(start).Seconds())
}

// RecordDone records one write of push outcomes that started at start.
func (t *Telemetry) RecordDone(start time.Time) {
	if t == nil {
		return
	}
	t.recordDuration.Record(context.Background(), time.Since(start).Seconds())
}

// RateWaited records a push's wait for the rate limit, if it waited at all
// (over 100µs).
func (t *Telemetry) RateWaited(d time.Duration) {
	if t == nil || d < 100*time.Microsecond {
		return
	}
	t.rateWait.Record(context.Background(), d.Seconds())
}

// BreakerChanged counts one state change of the circuit breaker. It does
// not block, and may be called while the breaker holds its lock.
func (t *Telemetry) BreakerChanged(from, to string) {
	if t == nil {
		return
	}
	t.transitions.Add(context.Background(), 1, metric.WithAttributes(keyBreakerFrom.String(from), keyBreakerTo.String(to)))
}
