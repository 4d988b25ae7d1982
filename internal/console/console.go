package console

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/herald-push/herald/internal/visible"
)

// Options configures the console.
type Options struct {
	// Title names the deployment in every page's heading. Defaults to
	// "Herald".
	Title string
	// Refresh is how often the overview reloads itself. Defaults to 10s;
	// negative means never.
	Refresh time.Duration
	// Key signs the anti-forgery tokens. Defaults to a random key, which
	// suits one process; instances behind one load balancer need the same
	// key so that a form one renders is accepted by another. At least 16
	// bytes when given.
	Key []byte
	// Logger receives the errors behind error pages: server errors (which
	// a page names only by a reference) at ERROR, refused requests at
	// INFO. Nil discards.
	Logger *slog.Logger
	// Now is the clock that pages measure ages against. Defaults to
	// time.Now.
	Now func() time.Time
}

// DefaultRefresh is the overview's refresh interval when none is given.
const DefaultRefresh = 10 * time.Second

// listLimit is how many rows a list page shows.
const listLimit = 100

//go:embed templates/*.html templates/style.css
var files embed.FS

// Handler is the console. Mount it under a path ending in "/", with that
// prefix stripped (http.StripPrefix), behind the host's authentication:
// every link and form it renders is relative to that path.
type Handler struct {
	op      Operator
	opts    Options
	key     []byte
	pages   map[string]*template.Template
	style   template.CSS
	csp     string
	mux     *http.ServeMux
	handler http.Handler
	log     *slog.Logger
	refused refusalLog
}

// New returns the console over op. It panics if op is nil or the key is
// too short (programmer errors).
func New(op Operator, opts Options) *Handler {
	if op == nil {
		panic("console: nil Operator")
	}
	if opts.Title == "" {
		opts.Title = "Herald"
	}
	if opts.Refresh == 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	key := opts.Key
	if key == nil {
		key = make([]byte, 32)
		_, _ = rand.Read(key) // never fails (crypto/rand)
	} else if len(key) < 16 {
		panic("console: Key shorter than 16 bytes")
	}
	h := &Handler{op: op, opts: opts, key: key, log: opts.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	css, err := fs.ReadFile(files, "templates/style.css")
	if err != nil {
		panic(err)
	}
	h.style = template.CSS(css)
	sum := sha256.Sum256(css)
	h.csp = "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
		"'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	h.pages = parsePages(h.funcs())
	h.routes()
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.refuse(w, r, "The request came from another site.")
	}))
	h.handler = cop.Handler(h.mux)
	return h
}

// ServeHTTP serves the console's pages.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", h.csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	h.handler.ServeHTTP(w, r)
}

func (h *Handler) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /{$}", h.overview)
	m.HandleFunc("GET /failed", h.failed)
	m.HandleFunc("GET /retry", h.confirmRetry)
	m.HandleFunc("POST /retry", h.retry)
	m.HandleFunc("GET /deadletters", h.deadLetters)
	m.HandleFunc("GET /replay", h.confirmReplay)
	m.HandleFunc("POST /replay", h.replay)
	m.HandleFunc("GET /search", h.search)
	m.HandleFunc("GET /notification", h.timeline)
	m.HandleFunc("GET /cancel", h.confirmCancel)
	m.HandleFunc("POST /cancel", h.cancel)
	m.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, "There is no such page in the console.", nil)
	})
	h.mux = m
}

// pageNames are the page templates, each rendered inside layout.html.
var pageNames = []string{"overview", "failed", "deadletters", "search", "timeline", "confirm", "message"}

func parsePages(funcs template.FuncMap) map[string]*template.Template {
	pages := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t := template.New("layout.html").Funcs(funcs)
		pages[name] = template.Must(t.ParseFS(files, "templates/layout.html", "templates/"+name+".html"))
	}
	return pages
}

// page is what layout.html needs besides the page's own data.
type page struct {
	Title   string // the page's title
	Site    string // Options.Title
	Nav     string // which navigation entry is current
	Style   template.CSS
	Refresh int // seconds; 0: none
	Notice  string
	Data    any
}

// render writes the page named name with data, buffered so that a
// template error becomes a 500, not half a page.
func (h *Handler) render(w http.ResponseWriter, status int, name string, p page) {
	p.Site, p.Style = h.opts.Title, h.style
	var buf bytes.Buffer
	if err := h.pages[name].Execute(&buf, p); err != nil {
		h.log.Error("console: render page", "component", "herald_console", "page", name, "err", err)
		http.Error(w, "the console could not render this page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// message is the data of message.html: an error or refusal.
type message struct {
	Heading string
	Text    string
	Detail  string
}

// fail renders an error page. err, when not nil, is logged; the page
// shows it only for a refused request (4xx), where it is about the form
// or the address the operator sent. A server error's text (a database
// error names tables, columns, constraints and sometimes values) goes to
// the log only, under a reference the page shows, so the two can be
// matched without the page telling a browser how the database is built.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, text string, err error) {
	m := message{Heading: http.StatusText(status), Text: text}
	if err != nil {
		if status >= http.StatusInternalServerError {
			ref := errorRef()
			h.log.Error("console: request failed", "component", "herald_console", "path", r.URL.Path,
				"ref", ref, "err", err)
			m.Detail = "The cause is in Herald's log, under ref=" + ref + "."
		} else {
			h.log.Info("console: request refused", "component", "herald_console", "path", r.URL.Path, "err", err)
			m.Detail = err.Error()
		}
	}
	h.render(w, status, "message", page{Title: m.Heading, Data: m})
}

// errorRef returns a short random reference for one logged error.
func errorRef() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x", b)
}

// refuse renders the 403 of a POST that failed the anti-forgery checks.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, why string) {
	if n, ok := h.refused.note(h.opts.Now()); ok {
		h.log.Warn("console: refused state-changing requests without a valid token or from another site",
			"component", "herald_console", "path", r.URL.Path, "reason", why, "count", n, "per", refusalLogInterval)
	}
	h.render(w, http.StatusForbidden, "message", page{Title: "Refused", Data: message{
		Heading: "Refused",
		Text:    why + " Nothing was changed. Open the page again from the console and confirm there.",
	}})
}

func (h *Handler) funcs() template.FuncMap {
	return template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05") + " UTC"
		},
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return ago(h.opts.Now().Sub(t))
		},
		"dur": readable,
		// shown writes the characters a reader cannot see for what they
		// are (controls, bidirectional overrides, zero-width characters)
		// as escapes, as the herald command does: html/template leaves them
		// be, and a right-to-left override in a user id would reorder the
		// rest of its table cell. For ids, types, codes, errors and
		// reasons; content (titles, bodies, payloads) is shown as written,
		// in a <bdi> that keeps its direction to itself.
		"shown": visible.Text,
		"now":   func() time.Time { return h.opts.Now() },
		"statusClass": func(s string) string {
			switch s {
			case "sent":
				return "ok"
			case "failed", "token_pruned":
				return "bad"
			case "pending", "claimed", "retry_scheduled":
				return "open"
			default:
				return "final"
			}
		},
	}
}

// ago says how long ago a moment was: "12s ago", "5m ago", "in 3s".
func ago(d time.Duration) string {
	if d < 0 {
		return "in " + readable(-d)
	}
	return readable(d) + " ago"
}

// readable rounds a duration to what a person reads at a glance.
func readable(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

// refusalLogInterval is how often at most the console logs the POSTs it
// refused: a page on another site can make a logged-in operator's browser
// send many, and one line per interval with the count says as much.
const refusalLogInterval = time.Minute

// refusalLog counts refused requests between log lines.
type refusalLog struct {
	mu    sync.Mutex
	last  time.Time
	count int
}

// note counts one refusal and reports whether to log now, with the count
// since the last line.
func (l *refusalLog) note(now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	if !l.last.IsZero() && now.Sub(l.last) < refusalLogInterval {
		return 0, false
	}
	n := l.count
	l.last, l.count = now, 0
	return n, true
}
