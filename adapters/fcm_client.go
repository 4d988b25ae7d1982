package adapters

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"
)

// fcmScopes are the OAuth2 scopes FCM HTTP v1 accepts.
var fcmScopes = []string{
	"https://www.googleapis.com/auth/firebase.messaging",
	"https://www.googleapis.com/auth/cloud-platform",
}

// FCMClient is a firebase messaging client whose HTTP transport Herald can
// reach: an FCMSender puts its circuit breaker there, so that it sees every
// HTTP attempt, the SDK's own retries included. Build it with NewFCMClient.
//
// One FCMClient serves one FCMSender: NewFCMSender refuses a client that
// already serves another.
type FCMClient struct {
	messaging *messaging.Client
	transport *fcmTransport
	used      atomic.Bool
}

// NewFCMClient builds the authenticated HTTP client the firebase SDK would
// build from opts, wraps its transport, and returns a messaging client on
// it for projectID.
//
// With no options it uses the SDK's standard credentials
// (GOOGLE_APPLICATION_CREDENTIALS, then Application Default Credentials) and
// endpoint (https://fcm.googleapis.com/v1). projectID "" means detect it as
// firebase.NewApp(ctx, nil) does: from FIREBASE_CONFIG, the credentials, or
// GOOGLE_CLOUD_PROJECT. Options that already carry an HTTP client
// (option.WithHTTPClient, as testutil.FakeFCM.ClientOptions does) are used
// as given: that client must do its own authentication, and its transport is
// wrapped in a shallow copy of it.
func NewFCMClient(ctx context.Context, projectID string, opts ...option.ClientOption) (*FCMClient, error) {
	authOpts := append([]option.ClientOption{option.WithScopes(fcmScopes...)}, opts...)
	hc, _, err := htransport.NewClient(ctx, authOpts...)
	if err != nil {
		return nil, fmt.Errorf("build fcm http client: %w", err)
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	t := &fcmTransport{base: base}
	wrapped := *hc // a shallow copy: a caller's client keeps its own transport
	wrapped.Transport = t

	var cfg *firebase.Config // nil: FIREBASE_CONFIG and the credentials say
	if projectID != "" {
		cfg = &firebase.Config{ProjectID: projectID}
	}
	app, err := firebase.NewApp(ctx, cfg, append(slices.Clone(authOpts), option.WithHTTPClient(&wrapped))...)
	if err != nil {
		return nil, fmt.Errorf("create firebase app: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("create firebase messaging client: %w", err)
	}
	return &FCMClient{messaging: client, transport: t}, nil
}

// errClientInUse reports an FCMClient handed to a second FCMSender.
var errClientInUse = errors.New("fcm client already serves another sender: build one per Herald")
