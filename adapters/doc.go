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
package adapters
