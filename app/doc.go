// Package app holds Herald's use cases: raising events inside the host's
// transaction, sending due deliveries to the push provider, the in-app
// inbox, and the device token registry.
//
// Each use case declares the small interfaces it needs right beside it
// (NotificationRepository, DeliveryStore, Pusher, ...); package adapters
// implements them with Postgres and the FCM SDK. Nothing here knows SQL,
// watermill or FCM, and nothing here runs a network call inside a database
// transaction.
package app
