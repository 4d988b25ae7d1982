package adapters_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Not parallel: it sets GOOGLE_APPLICATION_CREDENTIALS.
func TestWithNoOptionsTheClientUsesTheStandardCredentialsAndRealFCM(t *testing.T) {
	// A service account whose token endpoint is a local server that refuses
	// every grant: nothing ever reaches Google.
	var grantsMu sync.Mutex
	var grants []string
	tokenServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		grantsMu.Lock()
		grants = append(grants, string(body))
		grantsMu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"invalid_grant","error_description":"test"}`)
	}))
	t.Cleanup(tokenServer.Close)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: must(x509.MarshalPKCS8PrivateKey(key))})
	account, err := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "herald-real-project", "private_key_id": "k1",
		"private_key": string(keyPEM), "client_email": "herald@herald-real-project.iam.gserviceaccount.com",
		"client_id": "1", "token_uri": tokenServer.URL + "/token",
	})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "service-account.json")
	require.NoError(t, os.WriteFile(path, account, 0o600))
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
	t.Setenv("FIREBASE_CONFIG", "")

	client, err := adapters.NewFCMClient(context.Background(), "") // project from the credentials
	require.NoError(t, err)
	var urlsMu sync.Mutex
	var urls []string
	adapters.WrapFCMClientTransport(client, func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			urlsMu.Lock()
			urls = append(urls, r.URL.String())
			urlsMu.Unlock()
			if !strings.HasPrefix(r.URL.String(), "https://fcm.googleapis.com/") {
				return nil, errors.New("refusing to send anywhere but fcm") // the test fails below
			}
			return next.RoundTrip(r) // authenticates first: the token server refuses, nothing is sent
		})
	})
	sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{SendTimeout: 500 * time.Millisecond})
	require.NoError(t, err)
	_, err = sender.Push(context.Background(), message("tok"))
	require.Error(t, err)
	var se *notification.SendError
	require.ErrorAs(t, err, &se)

	urlsMu.Lock()
	defer urlsMu.Unlock()
	require.NotEmpty(t, urls)
	assert.Equal(t, "https://fcm.googleapis.com/v1/projects/herald-real-project/messages:send", urls[0])
	grantsMu.Lock()
	defer grantsMu.Unlock()
	require.NotEmpty(t, grants, "the service account's token endpoint was asked for a token")
	assert.Contains(t, grants[0], "jwt-bearer")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
