// Package chaos is `herald chaos`: fault-injection scenarios (SIGKILL,
// Postgres restarts, FCM outages and hangs, quota storms, poison input, clock
// skew...) each on its own throwaway Postgres and fake FCM, each printing
// one JSON line of what was committed, lost and duplicated.
//
// Scenarios that kill or skew Herald's process run it in a child: the
// scenario re-executes its own binary as `herald chaos-worker` (RunWorker),
// which cmd/herald's main dispatches to, and a test binary's TestMain too.
package chaos
