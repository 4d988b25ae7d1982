package telemetry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Span names.
const (
	SpanRaise = "herald.raise"
	SpanRelay = "herald.relay"
	SpanPush  = "herald.push"
)

// noopSpan stands for a span not started.
var noopSpan = noop.Span{}

// pushStart is made once: a push's span starts with no allocation of ours.
var pushStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// traceContext is W3C Trace Context (traceparent, tracestate), the format
// in which a raise's span travels through the outbox: in each outbox
// message's metadata, and as the notification's trace_parent.
var traceContext = propagation.TraceContext{}

// Inject writes the W3C trace context of ctx's span (traceparent and, if
// any, tracestate) into metadata. It writes nothing when ctx has no valid
// span.
func Inject(ctx context.Context, metadata map[string]string) {
	traceContext.Inject(ctx, propagation.MapCarrier(metadata))
}

// TraceParent returns the W3C traceparent of ctx's span, or "" when ctx
// has no valid span.
func TraceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c["traceparent"]
}

// linkTo returns the link to the span context the metadata carries, if it
// carries a valid one.
func linkTo(metadata map[string]string) (trace.Link, bool) {
	if metadata["traceparent"] == "" {
		return trace.Link{}, false
	}
	sc := trace.SpanContextFromContext(traceContext.Extract(context.Background(), propagation.MapCarrier(metadata)))
	if !sc.IsValid() {
		return trace.Link{}, false
	}
	return trace.Link{SpanContext: sc}, true
}

// parseTraceParent reads a W3C traceparent of version 00
// ("00-<trace id>-<span id>-<flags>") as a remote span context, without
// the propagator's carrier map: every push reads one.
func parseTraceParent(tp string) (trace.SpanContext, bool) {
	if len(tp) != 55 || tp[:3] != "00-" || tp[35] != '-' || tp[52] != '-' {
		return trace.SpanContext{}, false
	}
	traceID, err := trace.TraceIDFromHex(tp[3:35])
	if err != nil {
		return trace.SpanContext{}, false
	}
	spanID, err := trace.SpanIDFromHex(tp[36:52])
	if err != nil {
		return trace.SpanContext{}, false
	}
	flags, err := hex.DecodeString(tp[53:55])
	if err != nil {
		return trace.SpanContext{}, false
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID,
		TraceFlags: trace.TraceFlags(flags[0]), Remote: true})
	return sc, sc.IsValid()
}

// TokenHash is herald.TokenHash: the first 12 hex digits of the token's
// SHA-256, the most of a token any span carries.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "tok_" + hex.EncodeToString(sum[:6])
}

// Span is a span Herald started; its zero value is a no-op.
type Span struct {
	span  trace.Span
	start time.Time
	t     *Telemetry
	ctx   context.Context
	// id is the time-ordered id (the notification's or the outbox
	// message's) whose time is the raise, for latency; zero if unknown.
	id uuid.UUID
	// push describes a push, for its span's attributes.
	push PushInfo
}

// StartRaise starts the producer span of one Raise. The returned context
// carries it: Inject and TraceParent write it into the outbox message and
// the notifications, for the relay's and the pushes' spans to link to.
func (t *Telemetry) StartRaise(ctx context.Context) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	ctx, span := t.tracer.Start(ctx, SpanRaise, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(keyMessagingSystem.String(systemOutbox), keyMessagingOperation.String("create"),
			keyMessagingDest.String(systemOutbox)))
	return ctx, Span{span: span, t: t, ctx: ctx}
}

// EndRaise ends a raise's span.
func (s Span) EndRaise(events, notifications int, err error) {
	if s.span == nil {
		return
	}
	if s.span.IsRecording() {
		s.span.SetAttributes(keyEvents.Int(events), keyNotifications.Int(notifications))
		setError(s.span, err, "")
	}
	s.span.End()
}

// StartRelay starts the consumer span of the relay's handling of one
// outbox message, linked (not parented: the relay runs later, in another
// transaction, maybe another process) to the raise span whose context the
// message's metadata carries. When that raise was not sampled, no span is
// started.
func (t *Telemetry) StartRelay(ctx context.Context, messageID string, metadata map[string]string) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	id, _ := uuid.Parse(messageID)
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	if link, ok := linkTo(metadata); ok {
		if !link.SpanContext.IsSampled() {
			// The raise's trace was not sampled: metrics only.
			return ctx, Span{span: noopSpan, start: time.Now(), t: t, ctx: ctx, id: id}
		}
		opts = append(opts, trace.WithLinks(link))
	}
	ctx, span := t.tracer.Start(ctx, SpanRelay, opts...)
	if span.IsRecording() {
		span.SetAttributes(keyMessagingSystem.String(systemOutbox), keyMessagingOperation.String("process"),
			keyMessagingDest.String(systemOutbox), keyMessagingMessageID.String(messageID))
	}
	return ctx, Span{span: span, start: time.Now(), t: t, ctx: ctx, id: id}
}

// EndRelay ends a relay span and records the message's metrics: handled,
// how long it took, how long after its raise, what it created.
func (s Span) EndRelay(events, deliveries, deadLetters int, err error) {
	if s.span == nil {
		return
	}
	if s.span.IsRecording() {
		s.span.SetAttributes(keyEvents.Int(events), keyDeliveries.Int(deliveries), keyDeadLetters.Int(deadLetters))
		setError(s.span, err, "")
	}
	s.span.End()
	t, ctx := s.t, s.ctx
	t.relayDuration.Record(ctx, time.Since(s.start).Seconds(), t.relayOpts.rec...)
	if err != nil {
		return // redelivered later: counted when handled
	}
	t.consumed.Add(ctx, 1, t.relayOpts.add...)
	if raised, ok := uuidTime(s.id); ok {
		t.relayLag.Record(ctx, time.Since(raised).Seconds())
	}
	if deliveries > 0 {
		t.relayed.Add(ctx, int64(deliveries))
	}
	if deadLetters > 0 {
		t.deadLetters.Add(ctx, int64(deadLetters))
	}
}

// PushInfo describes one push for its span. The token itself is never
// recorded, only its hash.
type PushInfo struct {
	DeliveryID     int64
	NotificationID uuid.UUID
	Token          string
	Platform       string
	Attempt        int
	// TraceParent is the raise's W3C traceparent, stored with the
	// notification; the push span links to it.
	TraceParent string
	// SendAt is when the notification was scheduled for, zero if it was
	// to go at once: the latency of a scheduled push starts then.
	SendAt time.Time
}

// StartPush starts the span of one push to FCM, linked to the raise span
// of its notification. The push span starts a trace of its own, sampled as
// any root span; when the raise's span was not sampled, none is started.
func (t *Telemetry) StartPush(ctx context.Context, p PushInfo) (context.Context, Span) {
	if t == nil {
		return ctx, Span{}
	}
	raise, linked := parseTraceParent(p.TraceParent)
	if linked && !raise.IsSampled() {
		// The raise's trace was not sampled: a push span linking to it
		// would show nothing of it. Metrics only.
		return ctx, Span{span: noopSpan, start: time.Now(), t: t, ctx: ctx, id: p.NotificationID}
	}
	ctx, span := t.tracer.Start(ctx, SpanPush, pushStart...)
	if linked && span.IsRecording() {
		span.AddLink(trace.Link{SpanContext: raise})
	}
	// The attributes are set at the end, all in one call: the SDK grows
	// the span's attribute slice once.
	return ctx, Span{span: span, start: time.Now(), t: t, ctx: ctx, id: p.NotificationID, push: p}
}

// EndPush ends a push's span and records its metrics. outcome is the
// delivery's status after the push ("sent", "retry_scheduled", "failed",
// "token_pruned", "pending" when given back unattempted); errorType is
// FCM's error code or Herald's class ("" on success); messageName is FCM's
// name of the accepted message.
func (s Span) EndPush(outcome, errorType, messageName string) {
	if s.span == nil {
		return
	}
	if s.span.IsRecording() {
		p := s.push
		kvs := make([]attribute.KeyValue, 0, 10)
		kvs = append(kvs, keyMessagingSystem.String(systemFCM), keyMessagingOperation.String("send"),
			keyDeliveryID.Int64(p.DeliveryID), keyNotificationID.String(p.NotificationID.String()),
			keyTokenHash.String(TokenHash(p.Token)), keyPlatform.String(p.Platform), keyAttempt.Int(p.Attempt+1),
			keyOutcome.String(outcome))
		if messageName != "" {
			kvs = append(kvs, keyMessagingMessageID.String(cut(messageName, maxMessageName)))
		}
		if errorType != "" {
			kvs = append(kvs, keyErrorType.String(errorType))
			s.span.SetStatus(codes.Error, errorType)
		}
		s.span.SetAttributes(kvs...)
	}
	s.span.End()
	t, ctx := s.t, s.ctx
	o := t.pushSet(outcome, errorType)
	t.sent.Add(ctx, 1, o.add...)
	t.pushDuration.Record(ctx, time.Since(s.start).Seconds(), o.rec...)
	if errorType == "" {
		if raised, ok := uuidTime(s.id); ok {
			// A push held until its send time is late only from then.
			t.latency.Record(ctx, time.Since(latest(raised, s.push.SendAt)).Seconds())
		}
	}
}

func setError(span trace.Span, err error, errorType string) {
	if err == nil {
		return
	}
	if errorType == "" {
		errorType = "error"
	}
	// The status says only the class: an error's text may quote what it
	// refused, and no span carries a message body.
	span.SetAttributes(keyErrorType.String(errorType))
	span.SetStatus(codes.Error, errorType)
}

// maxMessageName bounds FCM's message name on a span, as Herald stores it:
// FCM's names are "projects/<id>/messages/<id>", far shorter, and a broken
// or hostile answer (read up to 64 KiB) must not make every push's span
// that large.
const maxMessageName = 256

// cut returns s cut to at most n bytes on a character boundary (a
// substring: nothing is allocated).
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// latest is the later of a and b.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// uuidTime is the time a version 7 UUID was made (millisecond precision).
func uuidTime(id uuid.UUID) (time.Time, bool) {
	if id.Version() != 7 {
		return time.Time{}, false
	}
	ms := int64(id[0])<<40 | int64(id[1])<<32 | int64(id[2])<<24 | int64(id[3])<<16 | int64(id[4])<<8 | int64(id[5])
	return time.UnixMilli(ms), true
}
