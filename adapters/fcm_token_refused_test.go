package adapters_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/api/option"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// breakerLines records the breaker's state-change lines.
type breakerLines struct {
	mu    sync.Mutex
	lines []map[string]string
}

func (b *breakerLines) Enabled(context.Context, slog.Level) bool { return true }
func (b *breakerLines) WithAttrs([]slog.Attr) slog.Handler       { return b }
func (b *breakerLines) WithGroup(string) slog.Handler            { return b }
func (b *breakerLines) Handle(_ context.Context, r slog.Record) error {
	line := map[string]string{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(a slog.Attr) bool { line[a.Key] = a.Value.String(); return true })
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
	return nil
}

// A service account key that Google's token endpoint refuses (deleted,
// revoked: "invalid_grant") stops all sending, as our own credentials
// refused by FCM do, and releases the push unattempted. The line that says
// the breaker opened says why: before, it said only that it opened, and
// nothing anywhere named the refused key.
func TestABreakerOpenedByARefusedServiceAccountKeySaysWhy(t *testing.T) {
	t.Parallel()
	tokenEndpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`)
	}))
	t.Cleanup(tokenEndpoint.Close)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	creds, err := json.Marshal(map[string]string{"type": "service_account", "project_id": "p", "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": "herald@p.iam.gserviceaccount.com", "client_id": "1", "token_uri": tokenEndpoint.URL + "/token"})
	require.NoError(t, err)
	// FCM itself is never reached: no token, no request.
	client, err := adapters.NewFCMClient(context.Background(), "p",
		option.WithCredentialsJSON(creds), option.WithEndpoint("https://127.0.0.1:1/v1"))
	require.NoError(t, err)
	lines := &breakerLines{}
	sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{BreakerFailures: 1, Logger: slog.New(lines)})
	require.NoError(t, err)

	_, err = sender.Push(context.Background(), message("tok"))
	require.Error(t, err)
	assert.False(t, notification.CountsAsAttempt(err), "the push spent an attempt: %v", err)
	assert.Equal(t, "open", sender.BreakerState())
	lines.mu.Lock()
	defer lines.mu.Unlock()
	var opened map[string]string
	for _, l := range lines.lines {
		if l["msg"] == "fcm circuit breaker changed state" && l["to"] == "open" {
			opened = l
		}
	}
	require.NotNil(t, opened, "no line for the breaker opening: %v", lines.lines)
	t.Logf("%s", opened["last_failure"])
	assert.True(t, strings.Contains(opened["last_failure"], "credentials refused by Google's token endpoint (HTTP 400): "),
		"the opening's line: %v", opened)
	assert.Contains(t, opened["last_failure"], "invalid_grant")
}
