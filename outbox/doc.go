// Package outbox is Herald's transactional outbox, and the only package that
// knows watermill.
//
// Who owns what, and which way the arrows point: outbox is glue between
// watermill-sql and the use cases of package app. It owns the watermill
// subscriber, router, schema adapter and publisher, the encoding of outbox
// messages (the envelope), and the translation of a watermill message and
// its subscriber transaction into a call of app.RelayHandler. The decisions
// are app's; the stores are given: outbox imports app and notification,
// never adapters. The composition root (package herald) passes functions
// that bind Postgres repositories to a transaction (adapters.NotificationWriterIn,
// adapters.RelayStoreIn, adapters.DeadLettersIn), so `go list -deps ./outbox`
// shows no adapters.
//
// Outbox.Raise runs inside the host application's own pgx transaction: it
// applies the host's rules to domain events (app.Raiser), stores the
// resulting notifications and appends the events to the outbox topic
// (watermill-sql, "herald_outbox") in that same transaction. If the
// transaction rolls back, nothing was written and nothing is ever sent; if
// it commits, the relay will see the events.
//
// Relay consumes the topic after commit with a watermill Router. Its handler
// runs inside the subscriber's transaction and only writes: app.RelayHandler
// expands each event's notifications into one delivery per current device
// token of the recipient, and commits with the ack, so the expansion happens
// exactly once. It never calls FCM and never sleeps: any open transaction
// delays every consumer of the topic, so the handler must be quick, and each
// statement is bounded (a recipient with many tokens is continued in chunks
// by the broadcast expander). Whatever a row of the outbox table holds, it
// never blocks the messages behind it: a row that is not a Herald message
// (bad payload or metadata), an event of an unknown type, or an event whose
// expansion keeps failing for a deterministic reason is moved to
// herald_dead_letters with the reason and acknowledged; only transient
// database failures are retried without end (see app.RelayHandler).
//
// Relay.Run outlives database outages (it restarts its subscriber with
// backoff), stops without pulling the subscriber's transaction from under
// a running handler, repairs a consumer-group position that a logical
// restore or cut-over left ahead of the cluster's transaction ids
// (offsets.go), and warns about long write transactions elsewhere in the
// cluster, which hold every later event back (long_transactions.go).
package outbox
