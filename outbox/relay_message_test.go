package outbox

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

func TestTheRelayHandsTheHandlerEachEventAndCanReplayItAlone(t *testing.T) {
	t.Parallel()
	ids := []uuid.UUID{uuid.New(), uuid.New()}
	whole := []byte(`{"v":1,"events":[{"type":"ping","data":{"a":1},"notifications":["` + ids[0].String() +
		`"]},{"type":"note","data":{"b":2},"notifications":["` + ids[1].String() + `"]}]}`)

	m := relayMessage(message.NewMessage("m1", whole))

	if m.Malformed != nil || len(m.Events) != 2 || m.ID != "m1" {
		t.Fatalf("relayMessage = %+v", m)
	}
	if m.Events[1].Type != "note" || m.Events[1].Notifications[0] != ids[1] {
		t.Fatalf("event 1 = %+v", m.Events[1])
	}
	alone, err := m.EncodeEvent(1)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeEnvelope(alone)
	if err != nil || len(back.Events) != 1 || back.Events[0].Type != "note" || string(back.Events[0].Data) != `{"b":2}` {
		t.Fatalf("event 1 alone decodes to %+v, %v", back, err)
	}
}

func TestARowTheRelayCannotReadReachesTheHandlerAsMalformed(t *testing.T) {
	t.Parallel()
	bad := message.NewMessage("m", []byte(`{"v":1,"events":[{"type":"ping","data":{},"notifications":[]}]}`))
	bad.Metadata = message.Metadata{invalidMetadataKey: `{"traceparent": 1}`}
	if m := relayMessage(bad); m.Malformed == nil || len(m.Events) != 0 {
		t.Errorf("unreadable metadata: %+v", m)
	}
	if m := relayMessage(message.NewMessage("m", []byte(`[1,2,3]`))); !errors.Is(m.Malformed, notification.ErrMalformedEvent) {
		t.Errorf("not an envelope: %+v", m.Malformed)
	}
	huge := message.NewMessage("m", bytes.Repeat([]byte(" "), app.MaxOutboxMessageBytes+1))
	if m := relayMessage(huge); m.Malformed != nil || m.Events != nil {
		t.Errorf("an oversized payload is left undecoded for the handler to refuse: %+v", m.Malformed)
	}
}
