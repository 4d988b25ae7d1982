package testutil_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/testutil"
)

// newSDK starts a fake and returns it with a real firebase messaging client pointed at it.
func newSDK(t *testing.T, cfg testutil.FakeFCMConfig) (*testutil.FakeFCM, *messaging.Client) {
	t.Helper()
	fake := testutil.NewFakeFCM(t, cfg)
	client, err := fake.MessagingClient(t.Context())
	require.NoError(t, err)
	return fake, client
}

// send sends one message to token with a deadline, as production code must.
func send(t *testing.T, client *messaging.Client, token string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return client.Send(ctx, &messaging.Message{Token: token, Data: map[string]string{"k": "v"}})
}

func TestFakeFCM_SendIsAcceptedAndRecorded(t *testing.T) {
	t.Parallel()
	fake, client := newSDK(t, testutil.FakeFCMConfig{})
	ttl := 90 * time.Minute

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	name, err := client.Send(ctx, &messaging.Message{
		Token:        "tok-1",
		Notification: &messaging.Notification{Title: "Hello", Body: "World"},
		Data:         map[string]string{"order": "42"},
		Android:      &messaging.AndroidConfig{TTL: &ttl},
	})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(name, "projects/herald-test/messages/"), name)

	got := fake.Accepted()
	require.Len(t, got, 1)
	require.Equal(t, name, got[0].Name)
	require.Equal(t, "tok-1", got[0].Token)
	require.Equal(t, "Hello", got[0].Title)
	require.Equal(t, "World", got[0].Body)
	require.Equal(t, map[string]string{"order": "42"}, got[0].Data)
	require.Equal(t, "5400s", got[0].TTL)
	require.Equal(t, 2, got[0].ProtoMajor)
	require.Empty(t, got[0].Authorization, "the SDK client sends no credentials")
	require.WithinDuration(t, time.Now(), got[0].At, 5*time.Second)

	require.Equal(t, got, fake.AcceptedFor("tok-1"))
	require.Empty(t, fake.AcceptedFor("tok-2"))
	require.EqualValues(t, 1, fake.AcceptedCount())
	require.EqualValues(t, 1, fake.Requests())

	second, err := send(t, client, "tok-2")
	require.NoError(t, err)
	require.NotEqual(t, name, second, "message names are unique")
	require.Equal(t, []string{"tok-1", "tok-2"}, tokens(fake.Accepted()), "acceptance order")
}

func TestFakeFCM_FaultsAreClassifiedBySDK(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		fault    testutil.Fault
		status   int
		classify func(error) bool
	}{
		{"unregistered", testutil.Fault{Code: testutil.FaultUnregistered}, 404, messaging.IsUnregistered},
		{"invalid token", testutil.Fault{Code: testutil.FaultInvalidToken}, 400, messaging.IsInvalidArgument},
		{"invalid message", testutil.Fault{Code: testutil.FaultInvalidMessage}, 400, messaging.IsInvalidArgument},
		{"quota exceeded", testutil.Fault{Code: testutil.FaultQuotaExceeded}, 429, messaging.IsQuotaExceeded},
		// A Retry-After over 2 minutes makes the SDK give up at once instead of retrying 503.
		{"unavailable", testutil.Fault{Code: testutil.FaultUnavailable, RetryAfter: 5 * time.Minute}, 503, messaging.IsUnavailable},
		{"internal", testutil.Fault{Code: testutil.FaultInternal}, 500, messaging.IsInternal},
		{"sender id mismatch", testutil.Fault{Code: testutil.FaultSenderIDMismatch}, 403, messaging.IsSenderIDMismatch},
		{"third party auth", testutil.Fault{Code: testutil.FaultThirdPartyAuth}, 401, messaging.IsThirdPartyAuthError},
		{"unauthenticated", testutil.Fault{Code: testutil.FaultUnauthenticated}, 401, func(err error) bool {
			return errorutils.IsUnauthenticated(err) && !messaging.IsThirdPartyAuthError(err)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake, client := newSDK(t, testutil.FakeFCMConfig{})
			fake.FailAll(tt.fault)

			_, err := send(t, client, "tok")
			require.Error(t, err)
			require.True(t, tt.classify(err), "%s not classified: %v", tt.fault.Code, err)
			resp := errorutils.HTTPResponse(err)
			require.NotNil(t, resp)
			require.Equal(t, tt.status, resp.StatusCode)
			require.EqualValues(t, 1, fake.Requests(), "the SDK must not retry this answer")
			require.Zero(t, fake.AcceptedCount())
		})
	}
}

func TestFakeFCM_InvalidTokenBody(t *testing.T) {
	t.Parallel()
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	fake.FailToken("bad", testutil.Fault{Code: testutil.FaultInvalidToken})

	status, body := postRaw(t, fake, http.MethodPost, sendPath(fake.ProjectID()), `{"message":{"token":"bad"}}`)
	require.Equal(t, http.StatusBadRequest, status)
	require.JSONEq(t, `{"error":{"code":400,
		"message":"The registration token is not a valid FCM registration token",
		"status":"INVALID_ARGUMENT",
		"details":[
			{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"},
			{"@type":"type.googleapis.com/google.rpc.BadRequest",
			 "fieldViolations":[{"field":"message.token","description":"Invalid registration token"}]}]}}`, body)
}

func TestFakeFCM_UnavailableIsRetriedBySDK(t *testing.T) {
	t.Parallel()
	fake, client := newSDK(t, testutil.FakeFCMConfig{})
	fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable, Times: 1})

	_, err := send(t, client, "tok")
	require.NoError(t, err, "the SDK retries a 503 at once, and the second attempt succeeds")
	require.EqualValues(t, 2, fake.Requests())
	require.EqualValues(t, 1, fake.AcceptedCount())
}

func TestFakeFCM_RetryAfterHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault testutil.Fault
		want  string
	}{
		{"quota rounds up to whole seconds", testutil.Fault{Code: testutil.FaultQuotaExceeded, RetryAfter: 1500 * time.Millisecond}, "2"},
		{"quota without retry after", testutil.Fault{Code: testutil.FaultQuotaExceeded}, ""},
		{"unavailable", testutil.Fault{Code: testutil.FaultUnavailable, RetryAfter: 3 * time.Minute}, "180"},
		{"not sent on other codes", testutil.Fault{Code: testutil.FaultInternal, RetryAfter: 10 * time.Second}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake, client := newSDK(t, testutil.FakeFCMConfig{})
			fake.FailAll(tt.fault)

			_, err := send(t, client, "tok")
			require.Error(t, err)
			resp := errorutils.HTTPResponse(err)
			require.NotNil(t, resp)
			require.Equal(t, tt.want, resp.Header.Get("Retry-After"))
		})
	}
}

func TestFakeFCM_TimesCountsDown(t *testing.T) {
	t.Parallel()
	fake, client := newSDK(t, testutil.FakeFCMConfig{})
	fake.FailAll(testutil.Fault{Code: testutil.FaultInternal, Times: 2})

	for i := range 2 {
		_, err := send(t, client, "tok")
		require.True(t, messaging.IsInternal(err), "send %d: %v", i, err)
	}
	_, err := send(t, client, "tok")
	require.NoError(t, err, "the fault is used up")
	require.EqualValues(t, 3, fake.Requests())
	require.EqualValues(t, 1, fake.AcceptedCount())
}

func TestFakeFCM_FailTokenBeatsFailAll(t *testing.T) {
	t.Parallel()
	fake, client := newSDK(t, testutil.FakeFCMConfig{})
	fake.FailAll(testutil.Fault{Code: testutil.FaultInternal})
	fake.FailToken("dead", testutil.Fault{Code: testutil.FaultUnregistered, Times: 1})
	fake.FailToken("slow", testutil.Fault{Code: testutil.FaultNone, Latency: 20 * time.Millisecond})

	tests := []struct {
		name  string
		token string
		check func(error) bool
	}{
		{"token fault first", "dead", messaging.IsUnregistered},
		{"then fail all once the token fault is used up", "dead", messaging.IsInternal},
		{"other tokens get fail all", "other", messaging.IsInternal},
		{"a token fault can accept", "slow", func(err error) bool { return err == nil }},
	}
	for _, tt := range tests { // in order: the cases share one fake
		_, err := send(t, client, tt.token)
		require.True(t, tt.check(err), "%s: %v", tt.name, err)
	}

	fake.ClearFaults()
	_, err := send(t, client, "dead")
	require.NoError(t, err, "no fault after ClearFaults")
	require.Equal(t, []string{"slow", "dead"}, tokens(fake.Accepted()))
}

func TestFakeFCM_Hang(t *testing.T) {
	t.Parallel()
	fake, client := newSDK(t, testutil.FakeFCMConfig{})
	fake.FailAll(testutil.Fault{Code: testutil.FaultHang})

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := client.Send(ctx, &messaging.Message{Token: "tok"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second)

	// A request still hanging when the fake closes is released.
	hung := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, fake.URL()+sendPath(fake.ProjectID()),
			strings.NewReader(`{"message":{"token":"tok"}}`))
		if err == nil {
			var resp *http.Response
			if resp, err = fake.HTTPClient().Do(req); err == nil {
				err = resp.Body.Close()
			}
		}
		hung <- err
	}()
	require.Eventually(t, func() bool { return fake.Requests() == 2 }, 2*time.Second, 5*time.Millisecond)

	start = time.Now()
	fake.Close()
	require.Less(t, time.Since(start), time.Second, "Close must not wait for hanging requests")
	select {
	case <-hung:
	case <-time.After(2 * time.Second):
		t.Fatal("hanging request not released by Close")
	}
	fake.Close() // idempotent
}

func TestFakeFCM_Latency(t *testing.T) {
	t.Parallel()
	fake, client := newSDK(t, testutil.FakeFCMConfig{Latency: 50 * time.Millisecond})

	start := time.Now()
	_, err := send(t, client, "tok")
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)

	fake.SetLatency(0)
	fake.FailToken("slow", testutil.Fault{Latency: 60 * time.Millisecond})
	start = time.Now()
	_, err = send(t, client, "slow")
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 60*time.Millisecond)
}

func TestFakeFCM_HTTPVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		http1     bool
		wantProto int
		maxConns  int64
	}{
		{"http2 multiplexes one connection", false, 2, 1},
		{"http1 opens a connection per in-flight request", true, 1, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake, client := newSDK(t, testutil.FakeFCMConfig{HTTP1: tt.http1})
			_, err := send(t, client, "warm-up") // the first connection is dialled alone
			require.NoError(t, err)
			fake.SetLatency(20 * time.Millisecond) // keep the 50 sends in flight together

			msgs := make([]*messaging.Message, 50)
			for i := range msgs {
				msgs[i] = &messaging.Message{Token: fmt.Sprintf("tok-%d", i)}
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			resp, err := client.SendEach(ctx, msgs) // 50 concurrent requests
			require.NoError(t, err)
			require.Equal(t, 50, resp.SuccessCount)

			for _, r := range fake.Accepted() {
				require.Equal(t, tt.wantProto, r.ProtoMajor, r.Token)
			}
			require.LessOrEqual(t, fake.Connections(), tt.maxConns)
			require.GreaterOrEqual(t, fake.Connections(), int64(1))
		})
	}
}

func TestFakeFCM_DontRecordKeepsCounters(t *testing.T) {
	t.Parallel()
	var hooked atomic.Int64
	fake, client := newSDK(t, testutil.FakeFCMConfig{
		DontRecord: true,
		OnAccept: func(r testutil.Received) {
			if r.Token == "tok" && r.Data["k"] == "v" {
				hooked.Add(1)
			}
		},
	})
	fake.FailToken("dead", testutil.Fault{Code: testutil.FaultUnregistered})

	for range 3 {
		_, err := send(t, client, "tok")
		require.NoError(t, err)
	}
	_, err := send(t, client, "dead")
	require.True(t, messaging.IsUnregistered(err))

	require.Nil(t, fake.Accepted())
	require.Nil(t, fake.AcceptedFor("tok"))
	require.EqualValues(t, 3, fake.AcceptedCount())
	require.EqualValues(t, 3, hooked.Load(), "OnAccept runs before the answer, for accepted messages only")
	require.EqualValues(t, 4, fake.Requests())
	require.EqualValues(t, 1, fake.Connections())

	fake.ResetRecorded()
	require.Zero(t, fake.AcceptedCount())
	require.Zero(t, fake.Requests())
	require.Zero(t, fake.Connections())
}

func TestFakeFCM_ResetRecorded(t *testing.T) {
	t.Parallel()
	fake, client := newSDK(t, testutil.FakeFCMConfig{})
	_, err := send(t, client, "tok")
	require.NoError(t, err)

	fake.ResetRecorded()
	require.Nil(t, fake.Accepted())
	require.Zero(t, fake.AcceptedCount())
	require.Zero(t, fake.Requests())

	_, err = send(t, client, "tok")
	require.NoError(t, err)
	require.Len(t, fake.Accepted(), 1)
}

func TestFakeFCM_DryRunIsNotRecorded(t *testing.T) {
	t.Parallel()
	fake, client := newSDK(t, testutil.FakeFCMConfig{ProjectID: "other-project"})

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	name, err := client.SendDryRun(ctx, &messaging.Message{Topic: "news"})
	require.NoError(t, err)
	require.Equal(t, "projects/other-project/messages/fake_message_id", name)
	require.Nil(t, fake.Accepted())
	require.Zero(t, fake.AcceptedCount())
	require.EqualValues(t, 1, fake.Requests())
}

func TestFakeFCM_PayloadTooBigViaSDK(t *testing.T) {
	t.Parallel()
	fake, client := newSDK(t, testutil.FakeFCMConfig{})

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := client.Send(ctx, &messaging.Message{Token: "tok", Data: map[string]string{"blob": strings.Repeat("x", 4096)}})
	require.True(t, messaging.IsInvalidArgument(err), "%v", err)
	require.Contains(t, err.Error(), "Message is too big")
	require.Zero(t, fake.AcceptedCount())
}

func TestFakeFCM_Protocol(t *testing.T) {
	t.Parallel()
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	path := sendPath(fake.ProjectID())
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantError  string // the error body's status; empty for success
		counted    bool   // counts in Requests
	}{
		{"unknown path", http.MethodPost, "/v1/projects/herald-test/messages:list", `{}`, 404, "NOT_FOUND", false},
		{"wrong project", http.MethodPost, sendPath("someone-else"), `{"message":{"token":"t"}}`, 404, "NOT_FOUND", true},
		{"get", http.MethodGet, path, ``, 405, "UNIMPLEMENTED", true},
		{"not json", http.MethodPost, path, `{"message":`, 400, "INVALID_ARGUMENT", true},
		{"no message", http.MethodPost, path, `{}`, 400, "INVALID_ARGUMENT", true},
		{"no target", http.MethodPost, path, `{"message":{"data":{"k":"v"}}}`, 400, "INVALID_ARGUMENT", true},
		{"two targets", http.MethodPost, path, `{"message":{"token":"t","topic":"news"}}`, 400, "INVALID_ARGUMENT", true},
		{"non-string data", http.MethodPost, path, `{"message":{"token":"t","data":{"n":1}}}`, 400, "INVALID_ARGUMENT", true},
		{"ttl over 28 days", http.MethodPost, path, `{"message":{"token":"t","android":{"ttl":"2419201s"}}}`, 400, "INVALID_ARGUMENT", true},
		{"ttl without unit", http.MethodPost, path, `{"message":{"token":"t","android":{"ttl":"60"}}}`, 400, "INVALID_ARGUMENT", true},
		{"payload too big", http.MethodPost, path, `{"message":{"token":"t","data":{"k":"` + strings.Repeat("x", 4090) + `"}}}`, 400, "INVALID_ARGUMENT", true},
		{"payload at the limit", http.MethodPost, path, `{"message":{"token":"t","data":{"k":"` + strings.Repeat("x", 4088) + `"}}}`, 200, "", true},
		{"condition", http.MethodPost, path, `{"message":{"condition":"'a' in topics"}}`, 200, "", true},
	}
	for _, tt := range tests { // sequential: the cases share one fake and its counters
		before := fake.Requests()
		status, body := postRaw(t, fake, tt.method, tt.path, tt.body)
		require.Equal(t, tt.wantStatus, status, "%s: %s", tt.name, body)
		var decoded struct {
			Name  string
			Error struct {
				Code   int
				Status string
			}
		}
		require.NoError(t, json.Unmarshal([]byte(body), &decoded), tt.name)
		require.Equal(t, tt.wantError, decoded.Error.Status, tt.name)
		if tt.wantError != "" {
			require.Equal(t, tt.wantStatus, decoded.Error.Code, tt.name)
		} else {
			require.NotEmpty(t, decoded.Name, tt.name)
		}
		wantCount := before
		if tt.counted {
			wantCount++
		}
		require.Equal(t, wantCount, fake.Requests(), tt.name)
	}
	require.EqualValues(t, 2, fake.AcceptedCount())
}

func TestFakeFCM_RecordsAuthorization(t *testing.T) {
	t.Parallel()
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, fake.URL()+sendPath(fake.ProjectID()),
		strings.NewReader(`{"message":{"token":"t"}}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer fake-token")
	resp, err := fake.HTTPClient().Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)

	got := fake.AcceptedFor("t")
	require.Len(t, got, 1)
	require.Equal(t, "Bearer fake-token", got[0].Authorization)
}

func TestStartFakeFCM_WithoutTestingT(t *testing.T) {
	t.Parallel()
	fake, err := testutil.StartFakeFCM(testutil.FakeFCMConfig{})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(fake.URL(), "https://127.0.0.1:"), fake.URL())
	require.Equal(t, "herald-test", fake.ProjectID())
	fake.Close()
	fake.Close()

	_, err = fake.HTTPClient().Get(fake.URL())
	require.Error(t, err, "a closed fake no longer listens")
}

// ExampleStartFakeFCM sends one push through the real firebase SDK to a fake FCM, as
// `herald demo` does.
func ExampleStartFakeFCM() {
	fake, err := testutil.StartFakeFCM(testutil.FakeFCMConfig{})
	if err != nil {
		panic(err)
	}
	defer fake.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, err := fake.MessagingClient(ctx)
	if err != nil {
		panic(err)
	}
	fake.FailToken("expired-token", testutil.Fault{Code: testutil.FaultUnregistered})

	_, err = client.Send(ctx, &messaging.Message{
		Token:        "device-token",
		Notification: &messaging.Notification{Title: "Order shipped", Body: "It arrives tomorrow"},
	})
	fmt.Println("sent:", err == nil)
	_, err = client.Send(ctx, &messaging.Message{Token: "expired-token"})
	fmt.Println("unregistered:", messaging.IsUnregistered(err))
	fmt.Println("accepted:", fake.Accepted()[0].Title)
	// Output:
	// sent: true
	// unregistered: true
	// accepted: Order shipped
}

func sendPath(project string) string {
	return "/v1/projects/" + project + "/messages:send"
}

// postRaw sends a request without the SDK and returns the status and body.
func postRaw(t *testing.T, fake *testutil.FakeFCM, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, fake.URL()+path, bytes.NewBufferString(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := fake.HTTPClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func tokens(rs []testutil.Received) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Token
	}
	return out
}
