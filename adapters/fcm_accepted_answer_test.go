package adapters_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/api/option"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// acceptingFCM is an FCM that accepts every push (200) and then answers
// with body: it counts the pushes it accepted.
func acceptingFCM(t *testing.T, http1 bool, body func(w http.ResponseWriter)) (*httptest.Server, *atomic.Int64) {
	var accepted atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Message struct {
				Token string `json:"token"`
			} `json:"message"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		accepted.Add(1) // FCM has it: the device will get it
		body(w)
	}))
	srv.EnableHTTP2 = !http1
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &accepted
}

// A push FCM accepted (it answered 200) is sent, whatever becomes of the
// answer's body: cut short, not JSON, empty, or too slow for the push's
// deadline. Reported failed, it would be retried (by the SDK at once, which
// retries any error reading a body, and by Herald later) and reach the
// device again.
func TestAPushFCMAcceptedIsSentOnceWhateverItsAnswersBody(t *testing.T) {
	t.Parallel()
	bodies := map[string]func(w http.ResponseWriter){
		"cut short": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "200")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `{"name":"projects/p/mess`)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection or stream dies mid-body
		},
		"not json": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "<html>ok</html>")
		},
		"empty": func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusOK)
		},
		"after the deadline": func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			time.Sleep(700 * time.Millisecond) // the push's deadline is 300 ms
			_, _ = io.WriteString(w, `{"name":"projects/p/messages/1"}`)
		},
	}
	for name, body := range bodies {
		for _, http1 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/http1=%t", name, http1), func(t *testing.T) {
				t.Parallel()
				srv, accepted := acceptingFCM(t, http1, body)
				client, err := adapters.NewFCMClient(context.Background(), "p",
					option.WithEndpoint(srv.URL+"/v1"), option.WithHTTPClient(srv.Client()))
				require.NoError(t, err)
				sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{SendTimeout: 300 * time.Millisecond})
				require.NoError(t, err)

				_, err = sender.Push(context.Background(), message("tok"))
				assert.NoError(t, err, "FCM accepted the push: it is sent, not to be retried")
				time.Sleep(100 * time.Millisecond) // any retry of the SDK's would have gone out
				assert.EqualValues(t, 1, accepted.Load(), "FCM received the push once")
				assert.Equal(t, "closed", sender.BreakerState())
			})
		}
	}
}

// Only FCM's acceptance of the push's own request is an acceptance: a
// redirect the HTTP client follows to a page (a captive portal, a
// proxy's login) that answers 200 has sent nothing, and reported sent the
// delivery would be lost.
func TestAPushRedirectedToAPageIsNotReportedSent(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/login" {
			http.Redirect(w, r, "/login", http.StatusFound) // the client follows it with a GET
			return
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html>sign in</html>")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client, err := adapters.NewFCMClient(context.Background(), "p",
		option.WithEndpoint(srv.URL+"/v1"), option.WithHTTPClient(srv.Client()))
	require.NoError(t, err)
	sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{SendTimeout: 300 * time.Millisecond})
	require.NoError(t, err)

	_, err = sender.Push(context.Background(), message("tok"))
	assert.Error(t, err, "FCM never had the push: it is not sent")
}

// FCM never redirects a send: something between Herald and FCM that
// redirects every request (to itself, or to a page) is an outage, and the
// breaker must see it, or every delivery spends an attempt on it.
func TestAnFCMThatOnlyRedirectsOpensTheBreaker(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			sender := senderAnsweredBy(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, r.URL.Path, status) // round and round
			})

			attempts := 0
			for i := range 10 {
				_, err := sender.Push(context.Background(), message(fmt.Sprintf("tok-%d", i)))
				require.Error(t, err)
				if notification.CountsAsAttempt(err) {
					attempts++
				}
			}
			assert.Equal(t, "open", sender.BreakerState())
			assert.LessOrEqual(t, attempts, 1, "deliveries that spent an attempt on the redirects")
		})
	}
}

// A proxy or a wrong endpoint answering every push with a 4xx FCM never
// gives (405, 410, 415) is not FCM rejecting each message: read so, it
// failed every delivery for good. The breaker opens instead, and no
// delivery spends more than the attempts before it.
func TestAnEndpointAnsweringA4xxFCMNeverGivesFailsNoDelivery(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusMethodNotAllowed, http.StatusGone, http.StatusUnsupportedMediaType} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			sender := senderAnsweredBy(t, func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "<html>not here</html>", status)
			})

			for i := range 10 {
				_, err := sender.Push(context.Background(), message(fmt.Sprintf("tok-%d", i)))
				require.Error(t, err)
				assert.NotErrorIs(t, err, notification.ErrMessageRejected, "push %d", i)
				assert.False(t, notification.CountsAsAttempt(err), "push %d spent an attempt: %v", i, err)
			}
			assert.Equal(t, "open", sender.BreakerState())
		})
	}
}

// senderAnsweredBy returns a sender (300 ms pushes, a breaker opening after 5
// failures for a minute) whose every request, its body read, is answered by
// answer on an HTTP/2 TLS server.
func senderAnsweredBy(t *testing.T, answer http.HandlerFunc) *adapters.FCMSender {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		answer(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client, err := adapters.NewFCMClient(context.Background(), "p",
		option.WithEndpoint(srv.URL+"/v1"), option.WithHTTPClient(srv.Client()))
	require.NoError(t, err)
	sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{
		SendTimeout: 300 * time.Millisecond, BreakerFailures: 5, BreakerOpenFor: time.Minute})
	require.NoError(t, err)
	return sender
}

// A 409 (ABORTED: the request lost a concurrency conflict at Google's end,
// to be retried) is not FCM's verdict on the message: it was read as one,
// and the delivery failed for good. It is now tried again, and FCM counts as
// working.
func TestAnAbortedAnswerIsTriedAgainNotFailedForGood(t *testing.T) {
	t.Parallel()
	sender := senderAnsweredBy(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_, _ = io.WriteString(w, `{"error":{"code":409,"message":"The operation was aborted.","status":"ABORTED"}}`)
	})

	for i := range 10 {
		_, err := sender.Push(context.Background(), message(fmt.Sprintf("tok-%d", i)))
		require.Error(t, err)
		assert.NotErrorIs(t, err, notification.ErrMessageRejected, "push %d", i)
		assert.ErrorIs(t, err, notification.ErrProviderUnavailable, "push %d", i)
		assert.True(t, notification.CountsAsAttempt(err), "push %d: an answer is an attempt", i)
	}
	assert.Equal(t, "closed", sender.BreakerState())
}

// An endpoint answering a push with an endless 2xx body (a broken proxy, a
// hostile endpoint) is not read whole: FCM's answers are a name of a few
// dozen bytes, and a hundred pushes in flight each reading hundreds of
// megabytes until their deadline ran a server out of memory. The answer is
// read to a bound; the push, accepted, is sent.
func TestAnEndlessAnswerToAPushIsNotReadIntoMemory(t *testing.T) {
	// Not parallel: it measures the process's allocations.
	for _, status := range []int{http.StatusOK, http.StatusInternalServerError} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			chunk := []byte(`{"name":"projects/p/messages/` + strings.Repeat("x", 32<<10))
			srv, _ := acceptingFCM(t, false, func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				for range 8 << 10 { // 256 MiB, or until the client stops reading
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			})
			client, err := adapters.NewFCMClient(context.Background(), "p",
				option.WithEndpoint(srv.URL+"/v1"), option.WithHTTPClient(srv.Client()))
			require.NoError(t, err)
			sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{SendTimeout: time.Second})
			require.NoError(t, err)

			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err = sender.Push(context.Background(), message("tok"))
			runtime.ReadMemStats(&after)
			if status == http.StatusOK {
				assert.NoError(t, err, "FCM accepted the push: it is sent")
			} else {
				assert.ErrorIs(t, err, notification.ErrProviderUnavailable)
			}
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %d KiB reading the answers", allocated>>10)
			assert.Less(t, allocated, uint64(64<<20), "the answer was read into memory")
		})
	}
}
