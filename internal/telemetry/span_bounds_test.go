package telemetry_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/herald-push/herald/internal/telemetry"
)

// A 2xx whose name is tens of kilobytes (a broken proxy, a hostile
// endpoint: the answer is read up to 64 KiB) is a push FCM accepted, and
// its span names the message: the name is kept to the 256 bytes Herald
// stores of it, not a span attribute of 64 KiB per push.
func TestAnAnswersHugeMessageNameNeverMakesASpanAttributeLongerThanItsBound(t *testing.T) {
	t.Parallel()
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	tel := telemetry.New(telemetry.Config{MeterProvider: noopmetric.NewMeterProvider(), TracerProvider: tp})
	_, span := tel.StartPush(context.Background(), telemetry.PushInfo{DeliveryID: 1, NotificationID: uuid.New(), Token: "t"})
	span.EndPush("sent", "", "projects/p/messages/"+strings.Repeat("é", 30<<10))

	spans := exporter.GetSpans()
	require.Len(t, spans, 1)
	found := false
	for _, kv := range spans[0].Attributes {
		assert.LessOrEqual(t, len(kv.Value.Emit()), 256, "%s", kv.Key)
		if kv.Key == "messaging.message.id" {
			found = true
			assert.True(t, strings.HasPrefix(kv.Value.AsString(), "projects/p/messages/"))
		}
	}
	assert.True(t, found, "the span still names the message")
}
