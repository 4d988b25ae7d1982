package herald_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
)

func TestStatsEncodeToJSONWithReadableDurationsAndSnakeCaseNames(t *testing.T) {
	t.Parallel()
	s := herald.Stats{Breaker: "half-open"}
	s.Relay.OldestTransactionAge = 1500 * time.Millisecond
	s.Relay.OldestTransactionPID = 4242
	s.Relay.DeadLetters = 3
	s.Sender.RetriesScheduled = 7
	s.Sender.InFlight = 2

	raw, err := json.Marshal(s)
	require.NoError(t, err)
	var got map[string]map[string]any
	var top map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &top))
	assert.JSONEq(t, `"half-open"`, string(top["breaker"]))
	delete(top, "breaker")
	rest, err := json.Marshal(top)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(rest, &got))

	assert.Equal(t, "1.5s", got["relay"]["oldest_transaction_age"])
	assert.EqualValues(t, 4242, got["relay"]["oldest_transaction_pid"])
	assert.EqualValues(t, 3, got["relay"]["dead_letters"])
	assert.EqualValues(t, 7, got["sender"]["retries_scheduled"])
	assert.EqualValues(t, 2, got["sender"]["in_flight"])

	// Every counter is encoded: a field added to the stats without a JSON
	// name fails here rather than vanishing from status pages.
	assert.Len(t, got["relay"], reflect.TypeFor[herald.RelayStats]().NumField())
	assert.Len(t, got["sender"], reflect.TypeFor[herald.SenderStats]().NumField())
}

func TestZeroStatsEncodeWithAZeroDuration(t *testing.T) {
	t.Parallel()
	raw, err := json.Marshal(herald.Stats{})
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"oldest_transaction_age":"0s"`)
}
