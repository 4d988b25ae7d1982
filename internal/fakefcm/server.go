package fakefcm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"firebase.google.com/go/v4/messaging"
	"google.golang.org/api/option"
)

// defaultProjectID is the project a Server serves when Config.ProjectID is empty.
const defaultProjectID = "herald-test"

// Config configures a Server. The zero value is valid and means the documented defaults.
type Config struct {
	// ProjectID is the Firebase project the fake answers for. Requests for any other project get
	// 404 NOT_FOUND. Defaults to "herald-test".
	ProjectID string

	// Latency is added to every messages:send request before it is answered. It can be changed
	// later with SetLatency. Defaults to 0.
	Latency time.Duration

	// HTTP1 makes the fake serve HTTP/1.1 over TLS only, and HTTPClient speak only HTTP/1.1.
	// Defaults to false: HTTP/2 over TLS, like real FCM, with HTTP/1.1 still offered via ALPN.
	HTTP1 bool

	// DontRecord stops the fake from keeping accepted messages in memory: Accepted and
	// AcceptedFor return nil. Counters and OnAccept still work. Use it for long benchmarks.
	// Defaults to false.
	DontRecord bool

	// OnAccept, if not nil, is called for every accepted message (not for validate_only
	// requests), on the server goroutine that handles the request, before the response is
	// written. It must be cheap and safe for concurrent use, and must not modify the Data map.
	OnAccept func(Received)

	// OnFault, if not nil, is called for every request answered with a
	// scripted fault (FailToken, FailAll; not FaultHang), with the request's
	// token and the time the answer is written, on the server goroutine,
	// just before the answer. It must be cheap and safe for concurrent use.
	OnFault func(token string, code FaultCode, answered time.Time)
}

// Received is one message the fake accepted.
type Received struct {
	// Name is the message name returned to the client: "projects/{project}/messages/{id}".
	Name string
	// Token is message.token; empty for topic and condition messages.
	Token string
	// Topic is message.topic; empty unless the message was sent to a topic.
	Topic string
	// Condition is message.condition; empty unless the message was sent to a condition.
	Condition string
	// Title is message.notification.title.
	Title string
	// Body is message.notification.body.
	Body string
	// Data is message.data; nil when the message had none.
	Data map[string]string
	// TTL is message.android.ttl as sent on the wire (for example "3600s"); empty if absent.
	TTL string
	// CollapseKey and AndroidPriority are message.android.collapse_key and .priority.
	CollapseKey, AndroidPriority string
	// AndroidNotification is message.android.notification, nil when absent.
	AndroidNotification *AndroidNotification
	// APNsHeaders is message.apns.headers (apns-expiration, apns-collapse-id, ...); nil when absent.
	APNsHeaders map[string]string
	// APNsAps is the "aps" dictionary of message.apns.payload (badge, sound, thread-id, category,
	// mutable-content, interruption-level, ...) as decoded JSON; nil when absent.
	APNsAps map[string]any
	// WebpushHeaders is message.webpush.headers (TTL, Topic, ...); nil when absent.
	WebpushHeaders map[string]string
	// WebpushLink is message.webpush.fcm_options.link.
	WebpushLink string
	// Authorization is the request's Authorization header; empty when the request had none
	// (the fake never requires one).
	Authorization string
	// ProtoMajor is the HTTP major version the request arrived with: 2 for HTTP/2, 1 for HTTP/1.1.
	ProtoMajor int
	// At is when the fake accepted the message, after its latency.
	At time.Time
	// Arrived is when the request reached the fake, before its latency:
	// what FCM's quota counts. Rates measured on it are free of the jitter
	// of the fake's own latency timers.
	Arrived time.Time
}

// AndroidNotification is the part of message.android.notification the fake records.
type AndroidNotification struct {
	ChannelID         string `json:"channel_id"`
	Image             string `json:"image"`
	ClickAction       string `json:"click_action"`
	Tag               string `json:"tag"`
	NotificationCount *int   `json:"notification_count"`
}

// Server is an in-process stand-in for the FCM HTTP v1 API
// (POST /v1/projects/{project}/messages:send) on a loopback TLS listener.
//
// It accepts every well-formed message unless a Fault is scripted with FailToken or FailAll,
// answers errors in the exact shape real FCM uses, and records what it accepted. All methods
// are safe for concurrent use. There is no FCM emulator: this fake is what Herald's tests,
// `herald demo` and `herald bench` send to.
type Server struct {
	projectID  string
	url        string
	dontRecord bool
	onAccept   func(Received)
	onFault    func(token string, code FaultCode, answered time.Time)

	// A message name is namePrefix + sequence number + nameSuffix, like FCM's
	// "projects/p/messages/0:1500415314455276%31bd1c9631bd1c96"; the suffix differs per fake.
	namePrefix string
	nameSuffix string
	nameSeq    atomic.Uint64
	// dryRunBody is the answer to a successful validate_only request.
	dryRunBody []byte

	latency atomic.Int64 // nanoseconds
	faults  atomic.Pointer[faultTable]
	faultMu sync.Mutex // serialises writers of faults

	requests    atomic.Int64
	inFlight    atomic.Int64 // handlers running, so Close can wait for them
	accepted    atomic.Int64
	connections atomic.Int64

	recordMu sync.Mutex
	recorded []Received

	server    *http.Server
	client    *http.Client
	certDER   []byte        // the self-signed certificate the server presents
	done      chan struct{} // closed by Close: releases hanging and sleeping requests
	serveDone chan struct{} // closed when the serve goroutine has returned
	closeOnce sync.Once
}

// Start starts a fake FCM server on 127.0.0.1 with a fresh self-signed certificate. The
// caller must call Close. Tests should use testutil.NewFakeFCM, which does.
func Start(cfg Config) (*Server, error) {
	projectID := cfg.ProjectID
	if projectID == "" {
		projectID = defaultProjectID
	}

	cert, roots, err := newSelfSignedCert()
	if err != nil {
		return nil, fmt.Errorf("create fake fcm certificate: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for fake fcm: %w", err)
	}

	instance := make([]byte, 8)
	_, _ = rand.Read(instance) // crypto/rand.Read never fails

	f := &Server{
		projectID:  projectID,
		url:        "https://" + ln.Addr().String(),
		dontRecord: cfg.DontRecord,
		onAccept:   cfg.OnAccept,
		onFault:    cfg.OnFault,
		namePrefix: "projects/" + projectID + "/messages/0:",
		nameSuffix: "%" + hex.EncodeToString(instance),
		dryRunBody: mustMarshal(sendResponse{Name: "projects/" + projectID + "/messages/fake_message_id"}),
		certDER:    cert.Certificate[0],
		done:       make(chan struct{}),
		serveDone:  make(chan struct{}),
	}
	f.latency.Store(int64(cfg.Latency))

	protocols := newProtocols(cfg.HTTP1)

	f.server = &http.Server{
		Handler:           http.HandlerFunc(f.serveHTTP),
		TLSConfig:         serverTLSConfig(cert),
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		// Clients that go away mid-handshake (benchmarks, closed tests) are not news.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	f.client = &http.Client{Transport: newTransport(roots, cfg.HTTP1)}

	go func() {
		defer close(f.serveDone)
		// ServeTLS only ever returns http.ErrServerClosed after Close, or a listener
		// error that leaves nothing to serve; either way the fake is finished.
		_ = f.server.ServeTLS(&countingListener{Listener: ln, n: &f.connections}, "", "")
	}()
	return f, nil
}

// Close stops the server and closes every connection to it. Requests that are hanging
// (FaultHang) or waiting out a latency are released first and answered 503 UNAVAILABLE, and
// Close waits (at most a second) for every handler to return, so no goroutine of the fake
// outlives it. It is idempotent and safe to call concurrently.
func (f *Server) Close() {
	f.closeOnce.Do(func() {
		close(f.done)
		// Not Shutdown: it waits up to a second for HTTP/2 clients to act on GOAWAY.
		_ = f.server.Close() // the only possible error is the listener's, and it is gone either way
		<-f.serveDone
		f.client.CloseIdleConnections()
		for deadline := time.Now().Add(time.Second); f.inFlight.Load() > 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	})
}

// URL returns the server's base URL, "https://127.0.0.1:{port}", without the "/v1" API prefix.
func (f *Server) URL() string { return f.url }

// ProjectID returns the Firebase project the fake answers for.
func (f *Server) ProjectID() string { return f.projectID }

// HTTPClient returns an HTTP client that trusts the fake's self-signed certificate and speaks
// HTTP/2 (HTTP/1.1 when Config.HTTP1 is set). Every call returns the same client, so
// connections are pooled. It has no timeout: give every request a context deadline.
func (f *Server) HTTPClient() *http.Client { return f.client }

// MessagingClient returns a real firebase SDK messaging client pointed at the fake. It sends
// no credentials (option.WithHTTPClient replaces the SDK's authenticated transport), which
// the fake accepts. The SDK's built-in retries stay on: it retries 503 and network errors.
func (f *Server) MessagingClient(ctx context.Context) (*messaging.Client, error) {
	return NewMessagingClient(ctx, f.projectID, f.ClientOptions()...)
}

// ClientOptions returns the options that point an FCM client at the fake:
// its endpoint and its HTTP client, which trusts the fake's certificate and
// sends no credentials (the fake requires none). Pass them to
// herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...).
func (f *Server) ClientOptions() []option.ClientOption {
	return []option.ClientOption{option.WithEndpoint(f.url + "/v1"), option.WithHTTPClient(f.client)}
}

// SetLatency sets the delay added to every messages:send request from now on, replacing
// Config.Latency.
func (f *Server) SetLatency(d time.Duration) { f.latency.Store(int64(d)) }

// Accepted returns a copy of the accepted messages in acceptance order, or nil when
// Config.DontRecord is set. validate_only requests are never included.
func (f *Server) Accepted() []Received {
	return f.copyRecorded(func(Received) bool { return true })
}

// AcceptedFor returns a copy of the accepted messages sent to token, in acceptance order, or
// nil when there are none or Config.DontRecord is set.
func (f *Server) AcceptedFor(token string) []Received {
	return f.copyRecorded(func(r Received) bool { return r.Token == token })
}

// AcceptedCount returns how many messages were accepted (validate_only requests excluded). It
// is an atomic counter and works with DontRecord.
func (f *Server) AcceptedCount() int64 { return f.accepted.Load() }

// Requests returns how many messages:send requests arrived, for any project and with any
// method, whatever the answer: accepted, faulted, invalid or hanging.
func (f *Server) Requests() int64 { return f.requests.Load() }

// Connections returns how many TCP connections the server has accepted.
func (f *Server) Connections() int64 { return f.connections.Load() }

// ResetRecorded forgets the accepted messages and sets AcceptedCount, Requests and
// Connections back to zero. Scripted faults, latency and open connections are kept, and
// message names stay unique.
func (f *Server) ResetRecorded() {
	f.recordMu.Lock()
	f.recorded = nil
	f.accepted.Store(0)
	f.requests.Store(0)
	f.connections.Store(0)
	f.recordMu.Unlock()
}

func (f *Server) copyRecorded(keep func(Received) bool) []Received {
	f.recordMu.Lock()
	defer f.recordMu.Unlock()
	var out []Received
	for _, r := range f.recorded {
		if keep(r) {
			r.Data = maps.Clone(r.Data)
			out = append(out, r)
		}
	}
	return out
}

// record counts an accepted message, keeps it unless DontRecord is set, and calls OnAccept.
func (f *Server) record(r Received) {
	if f.dontRecord {
		f.accepted.Add(1)
	} else {
		f.recordMu.Lock() // the count moves with the slice, so ResetRecorded clears both at once
		f.recorded = append(f.recorded, r)
		f.accepted.Add(1)
		f.recordMu.Unlock()
	}
	if f.onAccept != nil {
		f.onAccept(r)
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// mustMarshal encodes values the fake builds itself, which always encode.
func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("fake fcm: encode built-in json: " + err.Error())
	}
	return b
}
