package fakefcm

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"google.golang.org/api/option"
)

// CertPEM returns the self-signed certificate the fake presents, PEM-encoded:
// what a client in another process must trust (see RemoteClientOptions).
func (f *Server) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.certDER})
}

// RemoteClientOptions points an FCM client at the fake served at url (from
// Server.URL, perhaps in another process) over a transport of its own that
// trusts only certPEM (from Server.CertPEM) and speaks HTTP/2, HTTP/1.1
// offered too. Like ClientOptions, it sends no credentials.
func RemoteClientOptions(url string, certPEM []byte) ([]option.ClientOption, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(certPEM) {
		return nil, errors.New("the fake fcm's certificate is not PEM")
	}
	client := &http.Client{Transport: newTransport(roots, false)}
	return []option.ClientOption{option.WithEndpoint(url + "/v1"), option.WithHTTPClient(client)}, nil
}

// NewMessagingClient returns a raw firebase SDK messaging client for
// projectID with opts (ClientOptions or RemoteClientOptions): the SDK with
// nothing of Herald around it.
func NewMessagingClient(ctx context.Context, projectID string, opts ...option.ClientOption) (*messaging.Client, error) {
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: projectID}, opts...)
	if err != nil {
		return nil, fmt.Errorf("create firebase app for fake fcm: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("create messaging client for fake fcm: %w", err)
	}
	return client, nil
}

// newProtocols offers HTTP/2 and HTTP/1.1, or HTTP/1.1 alone with http1.
func newProtocols(http1 bool) *http.Protocols {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(!http1)
	return protocols
}

// newTransport is the client transport of a fake: TLS trusting roots, HTTP/2
// unless http1, and a connection pool large enough for benchmarks.
func newTransport(roots *x509.CertPool, http1 bool) *http.Transport {
	return &http.Transport{
		TLSClientConfig:     clientTLSConfig(roots),
		Protocols:           newProtocols(http1),
		ForceAttemptHTTP2:   !http1,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
}
