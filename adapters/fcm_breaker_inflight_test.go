package adapters_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/api/option"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// When the breaker opens, a push whose request FCM is already answering
// must keep that answer: cancelling it would lose an acceptance, and the
// delivery, released, would be pushed a second time later.
func TestAPushOnTheWireWhenTheBreakerOpensIsAcceptedOnceNotSentTwice(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 3, BreakerOpenFor: time.Minute})
	_, err := sender.Push(context.Background(), message("warm-up"))
	require.NoError(t, err)
	// FCM is slow for this one and accepts it.
	fake.FailToken("accepted-slowly", testutil.Fault{Code: testutil.FaultNone, Latency: 700 * time.Millisecond})
	for _, tok := range []string{"broken-1", "broken-2", "broken-3"} {
		fake.FailToken(tok, testutil.Fault{Code: testutil.FaultInternal}) // not retried by the SDK
	}

	slow := make(chan error, 1)
	go func() {
		_, err := sender.Push(context.Background(), message("accepted-slowly"))
		slow <- err
	}()
	require.Eventually(t, func() bool { return fake.Requests() >= 2 }, 5*time.Second, time.Millisecond,
		"the slow push is on the wire")
	for _, tok := range []string{"broken-1", "broken-2", "broken-3"} {
		_, _ = sender.Push(context.Background(), message(tok))
	}
	require.Equal(t, "open", sender.BreakerState(), "three failures open the breaker while the slow push is out")

	select {
	case err := <-slow:
		require.NoError(t, err, "FCM accepted it: the push reports it sent")
	case <-time.After(5 * time.Second):
		t.Fatal("the push on the wire never came back")
	}
	assert.Len(t, fake.AcceptedFor("accepted-slowly"), 1)
}

// slowBodyFCM is an FCM whose acceptance of token "accepted" comes in two
// parts: the headers at once, the body only once release is closed
// (reading is closed in between); it answers every other token 500
// INTERNAL.
func slowBodyFCM(t *testing.T, http1 bool) (srv *httptest.Server, reading, release chan struct{}) {
	reading, release = make(chan struct{}), make(chan struct{})
	srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Message struct {
				Token string `json:"token"`
			} `json:"message"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if req.Message.Token != "accepted" {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"error":{"code":500,"message":"Internal error","status":"INTERNAL","details":[`+
				`{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INTERNAL"}]}}`)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		close(reading)
		<-release
		_, _ = io.WriteString(w, `{"name":"projects/p/messages/1"}`)
	}))
	srv.EnableHTTP2 = !http1
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, reading, release
}

// When the breaker opens, a push FCM has already accepted, whose answer's
// body is still on its way, keeps that acceptance: stopping it then would
// lose the answer and report an accepted push failed, and the delivery,
// released, would be pushed a second time.
func TestAPushFCMAcceptedIsNotStoppedWhileItsAnswerIsRead(t *testing.T) {
	t.Parallel()
	for _, http1 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http1=%t", http1), func(t *testing.T) {
			t.Parallel()
			srv, reading, release := slowBodyFCM(t, http1)
			client, err := adapters.NewFCMClient(context.Background(), "p",
				option.WithEndpoint(srv.URL+"/v1"), option.WithHTTPClient(srv.Client()))
			require.NoError(t, err)
			sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{BreakerFailures: 3, BreakerOpenFor: time.Minute})
			require.NoError(t, err)

			accepted := make(chan error, 1)
			go func() {
				_, err := sender.Push(context.Background(), message("accepted"))
				accepted <- err
			}()
			select {
			case <-reading:
			case <-time.After(5 * time.Second):
				t.Fatal("the push's answer never came")
			}
			for _, tok := range []string{"broken-1", "broken-2", "broken-3"} {
				_, err := sender.Push(context.Background(), message(tok))
				require.ErrorIs(t, err, notification.ErrProviderUnavailable)
			}
			require.Equal(t, "open", sender.BreakerState())
			close(release)
			select {
			case err := <-accepted:
				require.NoError(t, err, "FCM accepted the push: it is sent, whatever the breaker did meanwhile")
			case <-time.After(5 * time.Second):
				t.Fatal("the accepted push never returned")
			}
		})
	}
}
