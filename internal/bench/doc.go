// Package bench is `herald bench`: throughput, latency and memory scenarios
// (personalised, broadcast, latency) on a throwaway Postgres and a fake FCM,
// each printed as one JSON object, with the raw firebase SDK as baseline;
// the relay alone on a committed backlog (relay); and one backlog sent by
// one Herald process, then by several sharing it (replicas).
//
// The fake FCM runs in a child process by default, so that its memory and
// CPU are not Herald's: the bench re-executes its own binary as `herald
// bench-fake-fcm` (RunFakeFCM), which cmd/herald's main dispatches to, and a
// test binary's TestMain too. replicas runs each Herald in a child process
// the same way: `herald bench-herald` (RunHerald).
package bench
