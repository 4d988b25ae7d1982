// Package app holds Herald's use cases: raising events inside the host's
// transaction (Raiser), deciding what becomes of each outbox message
// (RelayHandler), expanding broadcasts (BroadcastExpander), sending due
// deliveries to the push provider (Sender), sweeping old rows
// (Housekeeper), the in-app inbox and the device token registry, and the
// fleet of processes on one database: registration, heartbeat and
// leadership (Membership) and the shared send budget (FleetBudget).
//
// Each use case declares the small interfaces it needs right beside it
// (NotificationWriter, RelayStore, DeadLetterReplayStore, DeliveryStore,
// Pusher, BroadcastStore, HousekeepingStore, InstanceStore, BudgetStore,
// ...). Nothing here knows SQL,
// watermill or FCM, and nothing here runs a network call inside a database
// transaction.
//
// Who owns what, and which way the arrows point:
//
//	notification  <-  app  <-  adapters   (Postgres, FCM: implement app's interfaces)
//	                   ^
//	                   +----  outbox      (watermill glue: calls app, never adapters)
//	herald (composition root) imports all of them and hands adapters to app and outbox.
//
// app imports only package notification. The rules live here: the relay's
// policy (dead-letter what can never succeed, retry deterministic failures a
// bounded number of times and then isolate the failing events, retry
// transient failures forever), the sender's pauses, holds and leases, the
// expander's and housekeeper's loops. Facts about a technology stay in
// adapters: which Postgres error is transient (adapters.IsTransient, offered
// to the relay through RelayStore.IsTransient), how FCM errors are
// classified into notification's sentinels. Every rule has a unit test on
// small hand-written fakes with a clock the test moves.
package app
