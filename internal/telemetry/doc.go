// Package telemetry holds Herald's OpenTelemetry instruments, so that the
// sender, the relay, Raise and the FCM client each observe with one call.
// It uses the OpenTelemetry API only: with no providers set (neither in
// herald.Config nor as OpenTelemetry's globals) every instrument is a
// no-op. The SDK and exporters belong to the host (and to Herald's tests,
// bench and command).
//
// Names follow the semantic conventions for messaging where they fit
// (messaging.client.sent.messages, messaging.client.operation.duration,
// messaging.process.duration, messaging.client.consumed.messages, with
// messaging.system "fcm" for pushes and "herald_outbox" for the outbox) and
// carry a herald. prefix elsewhere. Durations are in seconds.
//
// Traces: Raise starts a producer span and writes its W3C trace context
// into each outbox message's metadata (traceparent, tracestate) and into
// each notification (trace_parent). The relay's span and every push's span
// link to it, as otelriver links a job's work span to the span that
// enqueued it: a link, not a parent, since they run later and elsewhere.
// No span carries a token or a message body; a push span carries the
// token's hash (TokenHash), the ids and FCM's error class.
//
// A push records with attribute sets made once per outcome and error
// class, so that the hot path allocates nothing for attributes; spans add
// attributes only when they are recording.
package telemetry
