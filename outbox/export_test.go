package outbox

import wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"

// RelaySelect is the relay's select of one batch, for tests that run it.
func RelaySelect(batchSize, batchBytes int) (string, []any, error) {
	s := relaySchema{DefaultPostgreSQLSchema: wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: batchSize}, batchBytes: batchBytes}
	q, err := s.SelectQuery(wsql.SelectQueryParams{Topic: topic, ConsumerGroup: ConsumerGroup, OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{}})
	return q.Query, q.Args, err
}
