package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/fakefcm"
)

// operatorConsole serves Herald's operator console for `herald demo
// -console`: from the moment the demo's Herald exists, during the
// scenario and after it, until the demo is interrupted.
type operatorConsole struct {
	ln   net.Listener
	srv  *http.Server
	done chan error
}

// listenOperatorConsole listens on addr (":8080", "127.0.0.1:0"), so that a
// bad address fails before the demo starts. A bare port listens on
// loopback only: the console has no authentication and the demo shows
// content, over DATABASE_URL's database when it is set; serving it to the
// network takes a host given explicitly (0.0.0.0:8080).
func listenOperatorConsole(addr string) (*operatorConsole, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	return &operatorConsole{ln: ln}, nil
}

// URL is where a browser on this machine reaches the console.
func (c *operatorConsole) URL() string {
	a := c.ln.Addr().(*net.TCPAddr)
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "localhost"
	}
	return fmt.Sprintf("http://%s/", net.JoinHostPort(host, fmt.Sprint(a.Port)))
}

// serve starts serving h's console. The demo has no users to protect, so
// the console is mounted as it is; a host mounts it behind its own
// authentication.
func (c *operatorConsole) serve(h *herald.Herald) {
	c.srv = &http.Server{
		Handler:           c.guard(h.Console(herald.ConsoleOptions{Title: "Herald demo", ShowContent: true, Refresh: 3 * time.Second})),
		ReadHeaderTimeout: 5 * time.Second,
	}
	c.done = make(chan error, 1)
	go func() { c.done <- c.srv.Serve(c.ln) }()
}

// guard wraps the console of a listener on loopback so that it answers
// only requests addressed to this machine by a local name (localhost, a
// loopback address): a web page that rebinds its own name to 127.0.0.1
// is otherwise same-origin with the console, reads it and posts its
// forms with their tokens. A console served to the network on purpose is
// left as it is.
func (c *operatorConsole) guard(next http.Handler) http.Handler {
	if a, ok := c.ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		ip := net.ParseIP(host)
		if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, "this console answers only at localhost", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Close stops serving, letting requests in progress finish for a moment.
func (c *operatorConsole) Close() error {
	if c.srv == nil {
		return c.ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.srv.Shutdown(ctx)
	if serveErr := <-c.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}

// demoUnknownEvent is an outbox message of an event type the demo's rules
// do not know, as a newer deployment of the host would write: the relay
// dead-letters it, and the console replays it.
const demoUnknownEvent = `{"v":1,"events":[{"type":"course_published","data":{"course_id":"go"},"notifications":[]}]}`

// keepServing runs Herald again after the scenario, leaves a failed
// delivery and a dead letter for the operator to mend in the console, and
// serves until ctx ends.
func (d *demo) keepServing(ctx context.Context) error {
	d.out.section("operator console")
	d.start(ctx)
	d.stopped = false
	if d.fake != nil {
		carol := d.user("carol").tokens[0]
		d.fake.FailToken(carol.token, fakefcm.Fault{Code: fakefcm.FaultInvalidMessage, Times: 1})
		d.out.event("fault", "FCM will reject the next push to %s once (INVALID_ARGUMENT): a failed delivery to retry", carol.label)
		if _, err := d.post(ctx, "dave", "k8s", "One more question", ""); err != nil {
			return err
		}
		if _, err := d.env.Pool.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
			VALUES ($1, $2, '{}', pg_current_xact_id())`, d.ns+"course-published-1", demoUnknownEvent); err != nil {
			return fmt.Errorf("write an unknown event: %w", err)
		}
		d.out.event("outbox", "a course_published event no rule knows, as a newer deployment would raise: a dead letter to replay")
	}
	d.out.event("console", "open %s (Ctrl-C to stop)", d.console.URL())
	<-ctx.Done()
	return d.stop()
}
