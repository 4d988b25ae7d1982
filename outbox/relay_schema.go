package outbox

import (
	"encoding/json"
	"fmt"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
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
}

// UnmarshalMessage reads one row as DefaultPostgreSQLSchema does (same
// columns, same ExtraData), without ever failing on the row's content.
func (s relaySchema) UnmarshalMessage(params wsql.UnmarshalMessageParams) (wsql.Row, error) {
	r := wsql.Row{}
	var transactionID wsql.XID8
	if err := params.Row.Scan(&r.Offset, &transactionID, &r.UUID, &r.Payload, &r.Metadata); err != nil {
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
