package outbox

import (
	"errors"
	"strings"
	"testing"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

func TestAnEventLargerThanRaiseAcceptsIsMalformed(t *testing.T) {
	t.Parallel()
	data := `"` + strings.Repeat("x", app.MaxEventBytes) + `"`
	_, err := decodeEnvelope([]byte(`{"v":1,"events":[{"type":"ping","data":` + data + `,"notifications":[]}]}`))
	if !errors.Is(err, notification.ErrMalformedEvent) {
		t.Fatalf("decodeEnvelope = %v, want ErrMalformedEvent", err)
	}
	largest := `"` + strings.Repeat("x", app.MaxEventBytes-2) + `"`
	if _, err := decodeEnvelope([]byte(`{"v":1,"events":[{"type":"ping","data":` + largest + `,"notifications":[]}]}`)); err != nil {
		t.Fatalf("an event of exactly MaxEventBytes is Raise's: %v", err)
	}
}
