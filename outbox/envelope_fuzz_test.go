package outbox

import (
	"errors"
	"testing"

	"github.com/herald-push/herald/notification"
)

// FuzzDecodeEnvelope: any payload on the outbox topic either decodes into
// events with types, or fails with ErrMalformedEvent (and is dead-lettered);
// it never panics, and what decodes encodes back to something that decodes.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add([]byte(`{"v":1,"events":[{"type":"comment_created","data":{},"notifications":["01a20074-030a-75c9-bc2f-1b769f4dd3a4"]}]}`))
	f.Add([]byte(`{"v":2,"events":[]}`))
	f.Add([]byte(`{"v":1,"events":[{"type":"","data":null}]}`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte(`"hello"`))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, payload []byte) {
		env, err := decodeEnvelope(payload)
		if err != nil {
			if !errors.Is(err, notification.ErrMalformedEvent) {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		for _, ev := range env.Events {
			if ev.Type == "" {
				t.Fatal("decoded an event without a type")
			}
			again, err := encodeEvent(ev)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if _, err := decodeEnvelope(again); err != nil {
				t.Fatalf("re-encoded event does not decode: %v", err)
			}
		}
	})
}
