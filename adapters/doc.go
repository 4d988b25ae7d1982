// Package adapters implements the interfaces of package app with real
// technology: Postgres through pgx (PostgresNotificationRepository,
// PostgresDeviceTokenRepository, PostgresDeliveryRepository,
// PostgresDeadLetterRepository, PostgresFleetRepository for the registry
// of running instances, the leader's lease and the shared send budget) and
// Firebase Cloud Messaging through the
// firebase Go SDK (FCMSender on an FCMClient), with a gobreaker circuit
// breaker in the client's HTTP transport that judges every attempt, the
// SDK's own retries included.
//
// Vendor errors are classified here into the domain's errors
// (notification.SendError and its classes), before anything wraps them.
// Every repository method is one short transaction or runs in the
// transaction it is given; none calls the network inside one. All types are
// safe for concurrent use.
//
// # Lock order
//
// Herald's statements lock rows in one order, so that no two of them ever
// deadlock. Postgres breaks a deadlock only after deadlock_timeout (a
// second by default), by failing one side: a host's registration or
// import, or a sender's record of outcomes. The order:
//
//  1. herald_broadcasts rows (ForgetUser, the broadcast expander);
//  2. herald_device_tokens rows, in byte order of the token (Go's string
//     order, Postgres's COLLATE "C"), before any of their deliveries:
//     UpsertMany sorts each chunk and upserts the tokens before it closes
//     deliveries, Delete deletes the token first, Record locks the tokens
//     it will prune before it records anything, ForgetUser locks the
//     user's tokens first, and housekeeping skips tokens locked by anyone;
//  3. herald_deliveries rows, in id order where a statement locks many
//     (Record's batch, the deliveries UpsertMany closes, ForgetUser's); a
//     statement closing a token's open deliveries (Delete, Record's dead
//     tokens) holds the token already; housekeeping, which deletes old
//     finished deliveries in no particular order, skips those locked by
//     anyone (an operator's retry, an erasure), as the operator's RetryAll
//     and RetryFailedWhere skip those locked while they pick;
//  4. herald_device_counts rows, in device order, last: the claim, which
//     skips locked deliveries rather than wait for them, takes its
//     devices' counts while it holds its deliveries; Record, after every
//     delivery it locks (its batch, the dead tokens' other pushes), gives
//     back the counts of the pushes given back unpushed;
//     ForgetUser deletes the user's devices' counts in its last
//     statement, after every delivery it deletes (a claim may hold one
//     made after ForgetUser locked the user's, and wait for a count);
//     housekeeping skips counts locked by anyone.
//
// A statement that takes its locks in one scan takes them in scan order,
// not in the order of the keys it was given. Where the order matters, the
// input is sorted, or the rows are locked with SELECT ... ORDER BY ... FOR
// UPDATE, and the next step is made to wait for that one by a scalar
// subquery ("AND (SELECT count(*) FROM locked) >= 0"), which Postgres runs
// to its end before it reads the first row of the next step.
package adapters
