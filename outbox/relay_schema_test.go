package outbox

import (
	"strings"
	"testing"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
)

// The relay's select keeps oversized payloads and metadata in the database
// (a small object naming the size comes instead) and bounds how long its
// transaction may sit idle holding the consumer group's lock. If a
// watermill-sql upgrade changes the query's shape, this fails rather than
// the relay silently reading whole rows again.
func TestTheRelaysSelectBoundsWhatItReadsAndHowLongItMayIdle(t *testing.T) {
	t.Parallel()
	s := relaySchema{DefaultPostgreSQLSchema: wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: 100}}
	q, err := s.SelectQuery(wsql.SelectQueryParams{
		Topic: topic, ConsumerGroup: "herald_relay", OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"herald_oversized_payload_bytes", "herald_oversized_metadata_bytes",
		"set_config('idle_in_transaction_session_timeout', '" + relayIdleTimeout + "', true)"} {
		if !strings.Contains(q.Query, want) {
			t.Errorf("the relay's select lacks %q:\n%s", want, q.Query)
		}
	}
	if strings.Contains(q.Query, relayColumns) {
		t.Error("the relay's select still reads watermill's plain columns")
	}
}
