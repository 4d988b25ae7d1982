package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// maxIDs bounds the ids one request may name.
const maxIDs = 1000

// maxFormBytes bounds a POST body.
const maxFormBytes = 64 << 10

// maxQuery bounds a search.
const maxQuery = 256

// maxCursor bounds a page cursor.
const maxCursor = 512

// validCode reports whether s can be an FCM or Herald error code:
// capital letters, digits and underscores, as "UNAVAILABLE" and
// "SENDER_ID_MISMATCH" are.
func validCode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	o, err := h.op.Overview(r.Context())
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The overview could not be read.", err)
		return
	}
	refresh := 0
	if h.opts.Refresh > 0 {
		refresh = max(1, int(h.opts.Refresh.Seconds()))
	}
	h.render(w, http.StatusOK, "overview", page{Title: "Overview", Nav: "overview", Refresh: refresh, Data: o})
}

func (h *Handler) failed(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	code, cursor := q.Get("code"), q.Get("cursor")
	if code != "" && !validCode(code) {
		h.fail(w, r, http.StatusBadRequest, "That is not an error code.", nil)
		return
	}
	if len(cursor) > maxCursor {
		h.fail(w, r, http.StatusBadRequest, "That is not a cursor the console made.", nil)
		return
	}
	pg, err := h.op.Deliveries(r.Context(), Query{Status: "failed", Code: code, Cursor: cursor, Limit: listLimit})
	if errors.Is(err, ErrInvalidQuery) {
		h.fail(w, r, http.StatusBadRequest, "That is not a cursor the console made.", nil)
		return
	}
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The failed deliveries could not be read.", err)
		return
	}
	p := page{Title: "Failed deliveries", Nav: "failed", Data: struct {
		Page
		Code  string
		Later bool // not the first page
	}{pg, code, cursor != ""}}
	if n, ok := count(q.Get("retried")); ok {
		p.Notice = plural(n, "failed delivery", "failed deliveries") + " made pending again."
	}
	h.render(w, http.StatusOK, "failed", p)
}

func (h *Handler) confirmRetry(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c := confirmation{Action: "retry", Button: "Retry", Back: "failed"}
	switch {
	case q.Get("all") == "1":
		c.Heading = "Retry every failed delivery?"
		c.Text = "Every delivery that has failed by now becomes pending again, due now with a fresh attempt count, in batches. A push whose token was pruned or moved to another user is still never sent."
		c.Fields = []field{{"all", "1"}}
	case q.Has("code"):
		code := q.Get("code")
		if !validCode(code) {
			h.fail(w, r, http.StatusBadRequest, "That is not an error code.", nil)
			return
		}
		c.Heading = "Retry every failed delivery with code " + code + "?"
		c.Text = "Every delivery that has failed by now with this code becomes pending again, due now with a fresh attempt count, in batches. A push whose token was pruned or moved to another user is still never sent."
		c.Fields = []field{{"code", code}}
		c.Back = "failed?code=" + url.QueryEscape(code)
	default:
		ids, err := parseIDs(q["id"])
		if err != nil {
			h.fail(w, r, http.StatusBadRequest, "Choose the failed deliveries to retry.", err)
			return
		}
		c.Heading = "Retry " + plural(len(ids), "failed delivery", "failed deliveries") + "?"
		c.Text = "They become pending again, due now with a fresh attempt count. A delivery that is no longer failed is left alone."
		c.Items, c.Fields = idItems("delivery", ids)
	}
	h.confirm(w, r, c)
}

func (h *Handler) retry(w http.ResponseWriter, r *http.Request) {
	if !h.checkPost(w, r, "retry") {
		return
	}
	var n int
	var err error
	if r.PostForm.Get("all") == "1" {
		n, err = h.op.RetryAllFailed(r.Context())
	} else if r.PostForm.Has("code") {
		code := r.PostForm.Get("code")
		if !validCode(code) {
			h.fail(w, r, http.StatusBadRequest, "The form named no valid error code.", nil)
			return
		}
		n, err = h.op.RetryFailedWithCode(r.Context(), code)
	} else {
		var ids []int64
		if ids, err = parseIDs(r.PostForm["id"]); err != nil {
			h.fail(w, r, http.StatusBadRequest, "The form named no valid delivery.", err)
			return
		}
		n, err = h.op.RetryFailed(r.Context(), ids)
	}
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, fmt.Sprintf("The retry stopped after %d deliveries.", n), err)
		return
	}
	seeOther(w, "failed?retried="+strconv.Itoa(n))
}

func (h *Handler) deadLetters(w http.ResponseWriter, r *http.Request) {
	all := r.URL.Query().Get("all") == "1"
	dls, err := h.op.DeadLetters(r.Context(), !all, listLimit)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The dead letters could not be read.", err)
		return
	}
	p := page{Title: "Dead letters", Nav: "deadletters", Data: struct {
		DeadLetters []DeadLetter
		All         bool
		Limit       int
	}{dls, all, listLimit}}
	if n, ok := count(r.URL.Query().Get("replayed")); ok {
		p.Notice = plural(n, "dead letter", "dead letters") + " replayed onto the outbox."
	}
	h.render(w, http.StatusOK, "deadletters", p)
}

func (h *Handler) confirmReplay(w http.ResponseWriter, r *http.Request) {
	ids, err := parseIDs(r.URL.Query()["id"])
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "Choose the dead letters to replay.", err)
		return
	}
	c := confirmation{
		Action: "replay", Button: "Replay", Back: "deadletters",
		Heading: "Replay " + plural(len(ids), "dead letter", "dead letters") + "?",
		Text:    "Each goes back on the outbox once, however often this is confirmed; the relay processes it again, and one that fails again becomes a new dead letter.",
	}
	c.Items, c.Fields = idItems("dead letter", ids)
	h.confirm(w, r, c)
}

func (h *Handler) replay(w http.ResponseWriter, r *http.Request) {
	if !h.checkPost(w, r, "replay") {
		return
	}
	ids, err := parseIDs(r.PostForm["id"])
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "The form named no valid dead letter.", err)
		return
	}
	n, err := h.op.ReplayDeadLetters(r.Context(), ids)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The replay failed.", err)
		return
	}
	seeOther(w, "deadletters?replayed="+strconv.Itoa(n))
}

func (h *Handler) search(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if len(q) > maxQuery {
		h.fail(w, r, http.StatusBadRequest, fmt.Sprintf("Search for at most %d characters.", maxQuery), nil)
		return
	}
	data := struct {
		Query string
		User  *User
	}{Query: q}
	if q != "" {
		// A notification id opens its timeline; a host whose user ids are
		// UUIDs too finds the user when no notification has that id.
		if id, err := parseUUID(q); err == nil {
			_, err := h.op.Timeline(r.Context(), id)
			if err == nil {
				seeOther(w, "notification?id="+url.QueryEscape(id.String()))
				return
			}
			if !errors.Is(err, ErrNotFound) {
				h.fail(w, r, http.StatusInternalServerError, "The notification could not be read.", err)
				return
			}
		}
		u, err := h.op.User(r.Context(), q, listLimit)
		if err != nil {
			h.fail(w, r, http.StatusInternalServerError, "The user could not be read.", err)
			return
		}
		data.User = &u
	}
	h.render(w, http.StatusOK, "search", page{Title: "Search", Nav: "search", Data: data})
}

func (h *Handler) timeline(w http.ResponseWriter, r *http.Request) {
	id, err := parseUUID(r.URL.Query().Get("id"))
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "That is not a notification id.", err)
		return
	}
	tl, err := h.op.Timeline(r.Context(), id)
	if errors.Is(err, ErrNotFound) {
		h.fail(w, r, http.StatusNotFound, "No notification has that id.", nil)
		return
	}
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The timeline could not be read.", err)
		return
	}
	// Pushes waiting to be made can be cancelled; one claimed is on its
	// way (it ends cancelled only if it fails and would be retried). So
	// can a notification the relay has not expanded yet: it then skips it.
	var open, claimed int64
	for _, c := range tl.Counts {
		switch c.Status {
		case "pending", "retry_scheduled":
			open += c.Count
		case "claimed":
			claimed += c.Count
		}
	}
	cancellable := tl.Notification.CancelledAt.IsZero() && (open > 0 || claimed > 0 || len(tl.Counts) == 0)
	p := page{Title: "Notification " + id.String(), Nav: "search", Data: struct {
		Timeline
		Open        int64
		Cancellable bool
	}{tl, open, cancellable}}
	if n, ok := count(r.URL.Query().Get("cancelled")); ok {
		p.Notice = plural(n, "undelivered push", "undelivered pushes") + " cancelled."
	}
	h.render(w, http.StatusOK, "timeline", p)
}

func (h *Handler) confirmCancel(w http.ResponseWriter, r *http.Request) {
	id, err := parseUUID(r.URL.Query().Get("id"))
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "That is not a notification id.", err)
		return
	}
	h.confirm(w, r, confirmation{
		Action: "cancel", Button: "Cancel its pushes", Back: "notification?id=" + id.String(),
		Heading: "Cancel the undelivered pushes of this notification?",
		Text:    "Every delivery of it not yet pushed becomes cancelled and is never sent. Pushes already sent stay sent; the notification stays in the recipient's inbox.",
		Items:   []string{"notification " + id.String()},
		Fields:  []field{{"id", id.String()}},
	})
}

func (h *Handler) cancel(w http.ResponseWriter, r *http.Request) {
	if !h.checkPost(w, r, "cancel") {
		return
	}
	id, err := parseUUID(r.PostForm.Get("id"))
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "The form named no valid notification.", err)
		return
	}
	n, err := h.op.CancelNotification(r.Context(), id)
	if errors.Is(err, ErrNotFound) {
		h.fail(w, r, http.StatusNotFound, "No notification has that id.", nil)
		return
	}
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "The cancellation failed.", err)
		return
	}
	seeOther(w, "notification?id="+id.String()+"&cancelled="+strconv.Itoa(n))
}

// confirmation is a confirmation page: what will happen, to what, and the
// form that does it.
type confirmation struct {
	Heading string
	Text    string
	Items   []string
	Action  string // the form's action, a relative URL, also the token's action
	Fields  []field
	Token   string
	Button  string
	Back    string // where "No" leads
}

// field is a hidden form field.
type field struct{ Name, Value string }

func (h *Handler) confirm(w http.ResponseWriter, r *http.Request, c confirmation) {
	c.Token = h.token(h.session(w, r), c.Action)
	h.render(w, http.StatusOK, "confirm", page{Title: "Confirm", Data: c})
}

// checkPost parses a POST's form and checks its anti-forgery token for
// action; it answers the request itself and returns false when the POST
// must not proceed.
func (h *Handler) checkPost(w http.ResponseWriter, r *http.Request, action string) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, http.StatusBadRequest, "The form could not be read.", err)
		return false
	}
	if !h.checkToken(r, action) {
		h.refuse(w, r, "The form carried no valid token for this action.")
		return false
	}
	return true
}

// idItems lists ids for a confirmation page and as hidden fields.
func idItems(noun string, ids []int64) ([]string, []field) {
	items := make([]string, len(ids))
	fields := make([]field, len(ids))
	for i, id := range ids {
		s := strconv.FormatInt(id, 10)
		items[i], fields[i] = noun+" "+s, field{"id", s}
	}
	return items, fields
}

// parseIDs parses row ids strictly: each a positive decimal integer of
// digits only (no sign, space or other base), at least one and at most
// maxIDs; duplicates are dropped.
func parseIDs(vals []string) ([]int64, error) {
	if len(vals) == 0 {
		return nil, errors.New("no id given")
	}
	if len(vals) > maxIDs {
		return nil, fmt.Errorf("%d ids given, at most %d at once", len(vals), maxIDs)
	}
	seen := make(map[int64]bool, len(vals))
	ids := make([]int64, 0, len(vals))
	for _, v := range vals {
		id, ok := positive(v)
		if !ok {
			return nil, fmt.Errorf("id %q is not a positive integer", v)
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// positive parses a positive decimal integer made of digits only.
func positive(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n > 0
}

// count parses a redirect's count (0 included); ok is false for anything
// else, which shows no notice.
func count(s string) (int, bool) {
	if s == "0" {
		return 0, true
	}
	n, ok := positive(s)
	return int(n), ok && n <= 1<<31-1
}

// parseUUID accepts only the canonical 36-character form of a UUID
// (uuid.Parse alone also takes braces, a urn: prefix and no hyphens).
func parseUUID(s string) (uuid.UUID, error) {
	if len(s) != 36 {
		return uuid.Nil, fmt.Errorf("%q is not a canonical uuid", s)
	}
	id, err := uuid.Parse(s)
	if err != nil || id.String() != strings.ToLower(s) {
		return uuid.Nil, fmt.Errorf("%q is not a canonical uuid", s)
	}
	return id, nil
}

// plural says "1 thing" or "3 things".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// seeOther redirects to loc, a URL relative to the console's own
// directory. It is written as given: http.Redirect would resolve it
// against the request's path, from which the host stripped the console's
// prefix.
func seeOther(w http.ResponseWriter, loc string) {
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusSeeOther)
}
