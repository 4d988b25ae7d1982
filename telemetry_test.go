package herald_test

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// TestOneTraceShowsTheCommentItsRelayAndEveryDevicesPush: the host's
// request raises a CommentCreated for a user with three devices; the
// exported spans hold Raise's span (a child of the host's), the relay's
// span and one push span per device, both linked to Raise's span through
// the traceparent carried in the outbox message and the notification. No
// attribute carries a token, the title or the body: a push span names its
// device by the token's hash.
func TestOneTraceShowsTheCommentItsRelayAndEveryDevicesPush(t *testing.T) {
	t.Parallel()
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := fastConfig()
	cfg.TracerProvider = tp
	h := newHarness(t, cfg)
	tokens := h.registerTokens("author", 3)
	h.run()

	ctx, request := tp.Tracer("host").Start(context.Background(), "POST /comments")
	tx, err := h.pool.Begin(ctx)
	require.NoError(t, err)
	ns, err := h.herald.Raise(ctx, tx, comment("c1", "ann", "author"))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	request.End()
	h.waitStatuses(ns[0], map[notification.DeliveryStatus]int{notification.StatusSent: 3}, 10*time.Second)

	byName := func() map[string][]tracetest.SpanStub {
		m := map[string][]tracetest.SpanStub{}
		for _, s := range exporter.GetSpans() {
			m[s.Name] = append(m[s.Name], s)
		}
		return m
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		spans := byName()
		assert.Len(c, spans["herald.raise"], 1)
		assert.Len(c, spans["herald.relay"], 1)
		assert.Len(c, spans["herald.push"], 3)
	}, 5*time.Second, 20*time.Millisecond)
	spans := byName()
	raise := spans["herald.raise"][0]
	assert.Equal(t, request.SpanContext().TraceID(), raise.SpanContext.TraceID(), "Raise's span is in the host's trace")
	assert.Equal(t, request.SpanContext().SpanID(), raise.Parent.SpanID(), "Raise's span is a child of the host's span")
	assert.Equal(t, trace.SpanKindProducer, raise.SpanKind)

	linksToRaise := func(s tracetest.SpanStub) bool {
		for _, l := range s.Links {
			if l.SpanContext.TraceID() == raise.SpanContext.TraceID() && l.SpanContext.SpanID() == raise.SpanContext.SpanID() {
				return true
			}
		}
		return false
	}
	relay := spans["herald.relay"][0]
	assert.True(t, linksToRaise(relay), "the relay's span links to Raise's span")
	assert.Equal(t, trace.SpanKindConsumer, relay.SpanKind)
	assert.Equal(t, int64(3), attr(relay, "herald.deliveries").AsInt64())

	var hashes []string
	for _, p := range spans["herald.push"] {
		assert.True(t, linksToRaise(p), "each push's span links to Raise's span")
		assert.Equal(t, "sent", attr(p, "herald.push.outcome").AsString())
		assert.Equal(t, "fcm", attr(p, "messaging.system").AsString())
		assert.Equal(t, ns[0].ID().String(), attr(p, "herald.notification.id").AsString())
		assert.NotEmpty(t, attr(p, "messaging.message.id").AsString(), "FCM's message name")
		hashes = append(hashes, attr(p, "herald.token.hash").AsString())
	}
	var want []string
	for _, tok := range tokens {
		want = append(want, herald.TokenHash(tok))
	}
	assert.ElementsMatch(t, want, hashes, "one push span per device, named by its token's hash")

	content := ns[0].Content()
	secrets := append([]string{content.Title, content.Body}, tokens...)
	for _, s := range exporter.GetSpans() {
		for _, kv := range s.Attributes {
			for _, secret := range secrets {
				assert.NotContains(t, kv.Value.Emit(), secret, "span %s attribute %s", s.Name, kv.Key)
			}
		}
		assert.NotContains(t, s.Status.Description, content.Body)
	}
}

// attr returns the span's attribute key (the zero value if it has none).
func attr(s tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// TestMetricsAreScrapedFromAPrometheusEndpoint wires Herald's metrics as
// the README shows (the OpenTelemetry Prometheus exporter behind promhttp)
// on a real HTTP server, sends a comment to three devices of which FCM
// refuses one as unregistered and one as another project's, and finds the
// series by their Prometheus names, with units in the names.
func TestMetricsAreScrapedFromAPrometheusEndpoint(t *testing.T) {
	t.Parallel()
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	require.NoError(t, err)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	server := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	t.Cleanup(server.Close)

	cfg := fastConfig()
	cfg.MeterProvider = mp
	h := newHarness(t, cfg)
	tokens := h.registerTokens("author", 3)
	h.fake.FailToken(tokens[1], testutil.Fault{Code: testutil.FaultUnregistered})
	h.fake.FailToken(tokens[2], testutil.Fault{Code: testutil.FaultSenderIDMismatch})
	h.run()
	ns := h.raise(true, comment("c1", "ann", "author"))
	h.waitStatuses(ns[0], map[notification.DeliveryStatus]int{
		notification.StatusSent: 1, notification.StatusTokenPruned: 2}, 10*time.Second)

	var page string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		page = scrape(t, server.URL+"/metrics")
		assert.Equal(c, 1.0, sample(page, "messaging_client_sent_messages_total",
			`herald_push_outcome="token_pruned"`, `error_type="SENDER_ID_MISMATCH"`))
	}, 10*time.Second, 50*time.Millisecond)

	for _, s := range []struct {
		name   string
		labels []string
		want   func(float64) bool
	}{
		{"messaging_client_sent_messages_total", []string{`herald_push_outcome="sent"`, `messaging_system="fcm"`}, eq(1)},
		{"messaging_client_sent_messages_total", []string{`herald_push_outcome="token_pruned"`, `error_type="UNREGISTERED"`}, eq(1)},
		{"messaging_client_operation_duration_seconds_count", []string{`herald_push_outcome="sent"`}, eq(1)},
		{"messaging_client_operation_duration_seconds_bucket", []string{`herald_push_outcome="sent"`, `le="+Inf"`}, eq(1)},
		{"herald_delivery_latency_seconds_count", nil, eq(1)},
		{"messaging_client_consumed_messages_total", []string{`messaging_system="herald_outbox"`}, eq(1)},
		{"messaging_process_duration_seconds_count", nil, eq(1)},
		{"herald_relay_lag_seconds_count", nil, eq(1)},
		{"herald_relay_deliveries_total", nil, eq(3)},
		{"herald_sender_claim_duration_seconds_count", nil, atLeast(1)},
		{"herald_sender_record_duration_seconds_count", nil, atLeast(1)},
		{"herald_alarms_total", []string{`herald_alarm="sender_id_mismatch"`}, eq(1)},
		// Three, or four if FCM answered SENDER_ID_MISMATCH before it
		// accepted the first push: that token is then kept, and pushed again
		// once a push vouched for the project.
		{"herald_fcm_attempts_total", []string{`herald_fcm_attempt="answered"`}, func(v float64) bool { return v == 3 || v == 4 }},
		{"herald_sender_in_flight", nil, eq(0)},
		{"herald_breaker_state", []string{`herald_breaker_state="closed"`}, eq(1)},
		{"herald_breaker_state", []string{`herald_breaker_state="open"`}, eq(0)},
		{"herald_deliveries", []string{`herald_delivery_status="pending"`}, atLeast(0)},
		{"herald_deliveries", []string{`herald_delivery_status="failed"`}, atLeast(0)},
		{"herald_deliveries_oldest_due_age_seconds", nil, atLeast(0)},
		{"herald_dead_letters_pending", nil, eq(0)},
	} {
		got := sample(page, s.name, s.labels...)
		assert.True(t, s.want(got), "%s%v = %v", s.name, s.labels, got)
	}
	assert.Contains(t, page, "# TYPE messaging_client_operation_duration_seconds histogram")
	assert.Contains(t, page, "# TYPE herald_deliveries gauge")
	for _, tok := range tokens {
		assert.NotContains(t, page, tok, "no token in any series")
	}
}

func eq(want float64) func(float64) bool     { return func(v float64) bool { return v == want } }
func atLeast(min float64) func(float64) bool { return func(v float64) bool { return v >= min } }

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url) //nolint:noctx // a test's scrape
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// sample returns the value of the first series of metric name whose labels
// include all of labels, or NaN (which no check accepts) when none does.
func sample(page, name string, labels ...string) float64 {
	line := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `(\{(.*)\})? (\S+)$`)
	for _, l := range strings.Split(page, "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		ok := true
		for _, want := range labels {
			ok = ok && strings.Contains(m[2], want)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err == nil {
			return v
		}
	}
	return math.NaN()
}
