package outbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/herald-push/herald/app"
)

// invalidMetadataKey marks a message whose metadata column did not hold a
// JSON object of strings; its value is the column's text (the start of it).
// The relay dead-letters such a message.
const invalidMetadataKey = "herald_invalid_metadata"

// maxInvalidMetadataKept bounds how much of unreadable metadata is kept for
// the dead letter.
const maxInvalidMetadataKept = 4096

// relaySchema is watermill-sql's default Postgres schema, except that a row
// whose metadata is not a JSON object of strings still becomes a message
// (marked with invalidMetadataKey) instead of failing the subscriber's whole
// batch: watermill's own UnmarshalMessage returns an error there, and the
// subscriber then retries the same batch forever.
type relaySchema struct {
	wsql.DefaultPostgreSQLSchema
	// batchBytes bounds the payload bytes one select reads: rows are
	// returned while the payloads before them total less than this (the
	// first always). 0 leaves only SubscribeBatchSize.
	batchBytes int
}

// relayColumns is the column list of watermill-sql v4.1.3's select, which
// SelectQuery replaces.
const relayColumns = `SELECT "offset", transaction_id, uuid, payload, metadata FROM `

// relayIdleTimeout ends the relay's subscriber transaction if its process
// stops talking mid-batch (paused, partitioned): that transaction holds the
// consumer group's row lock, and every other relay waits on it until
// Postgres notices. It is far above any handler's ack deadline.
const relayIdleTimeout = "30s"

// SelectQuery is watermill-sql's, except that a payload or metadata larger
// than the relay reads is replaced, in the database, by a small object
// naming its size, so an oversized row never comes into memory (the relay
// dead-letters it as malformed); and the transaction gets
// relayIdleTimeout.
func (s relaySchema) SelectQuery(params wsql.SelectQueryParams) (wsql.Query, error) {
	q, err := s.DefaultPostgreSQLSchema.SelectQuery(params)
	if err != nil {
		return q, err
	}
	if !strings.Contains(q.Query, relayColumns) {
		return q, fmt.Errorf("outbox relay: watermill-sql's select query changed shape; relaySchema needs updating")
	}
	q.Query = strings.Replace(q.Query, relayColumns, fmt.Sprintf(`SELECT "offset", transaction_id, uuid,
			CASE WHEN octet_length(payload::text) > %[1]d
				THEN json_build_object('%[4]s', octet_length(payload::text))
				ELSE payload END AS payload,
			CASE WHEN octet_length(metadata::text) > %[2]d
				THEN json_build_object('%[5]s', octet_length(metadata::text)::text)
				ELSE metadata END AS metadata,
			set_config('idle_in_transaction_session_timeout', '%[3]s', true) AS idle_timeout
		FROM `, app.MaxOutboxMessageBytes, maxMetadataBytes, relayIdleTimeout, oversizedPayloadKey, oversizedMetadataKey), 1)
	if s.batchBytes > 0 {
		// A message holds up to 1,000 notifications: a batch of 100 large
		// ones would be 15 MB or more in memory at once, so a backlog of
		// large raises would make the relay's memory grow with it. A NULL
		// payload counts as empty: were it left out of the batch, the rows
		// after it would be acknowledged past it and it would never be
		// dead-lettered.
		q.Query = fmt.Sprintf(`SELECT "offset", transaction_id, uuid, payload, metadata, idle_timeout FROM (
			SELECT batch.*, sum(coalesce(octet_length(batch.payload::text), 0))
				OVER (ORDER BY batch.transaction_id, batch."offset") AS upto
			FROM (%s) AS batch
		) AS bounded
		WHERE upto - coalesce(octet_length(payload::text), 0) < %d
		ORDER BY transaction_id ASC, "offset" ASC`, q.Query, s.batchBytes)
	}
	return q, nil
}

// oversizedPayloadKey and oversizedMetadataKey name the objects SelectQuery
// puts in place of an oversized payload or metadata.
const (
	oversizedPayloadKey  = "herald_oversized_payload_bytes"
	oversizedMetadataKey = "herald_oversized_metadata_bytes"
)

// oversizedMarker reports whether payload is SelectQuery's stand-in for an
// oversized payload, and the size it names.
func oversizedMarker(payload []byte) (int64, bool) {
	if len(payload) > 100 || !bytes.Contains(payload, []byte(oversizedPayloadKey)) {
		return 0, false
	}
	var marker map[string]int64
	if json.Unmarshal(payload, &marker) != nil {
		return 0, false
	}
	size, ok := marker[oversizedPayloadKey]
	return size, ok && len(marker) == 1
}

// maxMetadataBytes bounds the metadata the relay reads; Herald's own is a
// few hundred bytes.
const maxMetadataBytes = 64 << 10

// UnmarshalMessage reads one row as DefaultPostgreSQLSchema does (same
// columns, same ExtraData), without ever failing on the row's content.
func (s relaySchema) UnmarshalMessage(params wsql.UnmarshalMessageParams) (wsql.Row, error) {
	r := wsql.Row{}
	var transactionID wsql.XID8
	var idleTimeout string
	if err := params.Row.Scan(&r.Offset, &transactionID, &r.UUID, &r.Payload, &r.Metadata, &idleTimeout); err != nil {
		return wsql.Row{}, fmt.Errorf("could not scan message row: %w", err)
	}
	msg := message.NewMessage(string(r.UUID), r.Payload)
	if r.Metadata != nil {
		if err := json.Unmarshal(r.Metadata, &msg.Metadata); err != nil {
			kept := r.Metadata[:min(len(r.Metadata), maxInvalidMetadataKept)]
			msg.Metadata = message.Metadata{invalidMetadataKey: string(kept)}
		}
	}
	r.Msg = msg
	r.ExtraData = map[string]any{"transaction_id": transactionID}
	return r, nil
}
