package adapters

import "net/http"

// WrapFCMClientTransport wraps the transport under c's breaker, for tests
// that must see requests before they leave the process.
func WrapFCMClientTransport(c *FCMClient, wrap func(http.RoundTripper) http.RoundTripper) {
	c.transport.base = wrap(c.transport.base)
}

// ClassifyFCMError is classifyFCMError, for the table tests of FCM's
// answers.
var ClassifyFCMError = classifyFCMError

// SetExactCountBelow sets the table size under which the status counts
// every delivery, until the test ends.
func SetExactCountBelow(t interface{ Cleanup(func()) }, n float64) {
	old := exactCountBelow
	exactCountBelow = n
	t.Cleanup(func() { exactCountBelow = old })
}

// RelayBacklogSQL is the status's relay backlog query ($1 the cap, $2 the
// relay's consumer group), for a test of its plan.
const RelayBacklogSQL = relayBacklogSQL

// ReapSQL is the heartbeat's statement that deletes the dead instances and
// frees their claims ($1 DeadAfter in microseconds, $2 the channel, $3 and
// $4 the candidates' ids and heartbeats), for a test of its plan.
const ReapSQL = reapSQL

// FCMMessage is fcmMessage, for the benchmark of building one push's SDK
// message.
var FCMMessage = fcmMessage

// ClaimSQL is the claim's statement, for a test of its plan.
const ClaimSQL = claimSQL

// MaxPushReasonLength is maxPushReasonLength, for the tests of FCM's errors.
const MaxPushReasonLength = maxPushReasonLength

// MaxWatchedInstances is maxWatchedInstances, for the test of a flooded
// registry.
const MaxWatchedInstances = maxWatchedInstances

// WatchedInstances returns how many instances r's beats remember.
func WatchedInstances(r *PostgresFleetRepository) int {
	r.seen.mu.Lock()
	defer r.seen.mu.Unlock()
	return len(r.seen.seen)
}
