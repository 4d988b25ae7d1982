package fakefcm

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	sendPathPrefix = "/v1/projects/"
	sendPathSuffix = "/messages:send"

	// maxPayloadBytes is FCM's limit on a message's notification and data, JSON-encoded.
	maxPayloadBytes = 4096
	// maxRequestBytes bounds what the fake reads of a request body.
	maxRequestBytes = 1 << 20
	// maxTTLSeconds is the longest android.ttl FCM accepts: 28 days.
	maxTTLSeconds = 28 * 24 * 60 * 60
)

// sendRequest is the body of POST /v1/projects/{p}/messages:send as the firebase SDK sends
// it. Only the fields the fake checks or records are decoded.
type sendRequest struct {
	ValidateOnly bool         `json:"validate_only"`
	Message      *wireMessage `json:"message"`
}

type wireMessage struct {
	Token     string `json:"token"`
	Topic     string `json:"topic"`
	Condition string `json:"condition"`
	// Notification and Data stay raw: their encoded size is what the 4096-byte limit counts.
	Notification json.RawMessage `json:"notification"`
	Data         json.RawMessage `json:"data"`
	Android      *struct {
		TTL         string          `json:"ttl"`
		CollapseKey string          `json:"collapse_key"`
		Priority    string          `json:"priority"`
		Notif       json.RawMessage `json:"notification"`
	} `json:"android"`
	APNS *struct {
		Headers map[string]string `json:"headers"`
		Payload json.RawMessage   `json:"payload"`
	} `json:"apns"`
	Webpush *struct {
		Headers    map[string]string `json:"headers"`
		FCMOptions *struct {
			Link string `json:"link"`
		} `json:"fcm_options"`
	} `json:"webpush"`
}

type wireNotification struct {
	Title string `json:"title"`
	Body  string `json:"body"`
}

type sendResponse struct {
	Name string `json:"name"`
}

// apiError is an error answer: an HTTP status and a body in Google's error shape.
type apiError struct {
	status int
	body   []byte
}

var (
	errNotFound = &apiError{http.StatusNotFound,
		googleErrorBody(http.StatusNotFound, "Requested entity was not found.", "NOT_FOUND")}
	errMethodNotAllowed = &apiError{http.StatusMethodNotAllowed,
		googleErrorBody(http.StatusMethodNotAllowed, "Method not allowed: use POST.", "UNIMPLEMENTED")}
	errClosing = &apiError{http.StatusServiceUnavailable,
		fcmErrorBody(http.StatusServiceUnavailable, "The fake FCM server is shutting down.", "UNAVAILABLE", "UNAVAILABLE")}
	errNoTarget  = invalidMessage("message", "Recipient of the message is not set.")
	errTwoTarget = invalidMessage("message",
		"Invalid value at 'message' (oneof), oneof field 'target' is already set. Exactly one of token, topic or condition must be set.")
	errTooBig     = invalidMessage("message", "Message is too big. The notification and data payload must not exceed 4096 bytes.")
	errBodyTooBig = invalidMessage("", "Request payload size exceeds the limit: 1048576 bytes.")
	errBadData    = invalidMessage("message.data", "Invalid value at 'message.data' (map<string, string>): every value must be a string.")
	errBadNotif   = invalidMessage("message.notification", "Invalid value at 'message.notification' (type.googleapis.com/google.firebase.fcm.v1.Notification).")
	errBadTTL     = invalidMessage("message.android.ttl",
		"Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration): must be a duration in seconds ending in 's', from 0s to 2419200s.")
)

// invalidMessage builds a 400 INVALID_ARGUMENT answer with FcmError INVALID_ARGUMENT, so the
// SDK's messaging.IsInvalidArgument recognises it, and a field violation when field is set.
func invalidMessage(field, message string) *apiError {
	var violations []fieldViolation
	if field != "" {
		violations = []fieldViolation{{Field: field, Description: message}}
	}
	return &apiError{http.StatusBadRequest,
		fcmErrorBody(http.StatusBadRequest, message, "INVALID_ARGUMENT", "INVALID_ARGUMENT", violations...)}
}

// bodyBuffers recycles request-body buffers: decoding copies everything it keeps.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (f *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	project, ok := parseSendPath(r.URL.Path)
	if !ok {
		writeJSON(w, errNotFound.status, errNotFound.body)
		return
	}
	f.requests.Add(1)

	var (
		req sendRequest
		bad *apiError
	)
	switch {
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		bad = errMethodNotAllowed
	case project != f.projectID:
		bad = errNotFound
	default:
		bad = decodeSendRequest(r, &req)
	}

	latency := time.Duration(f.latency.Load())
	var fault Fault
	faulted := false
	if bad == nil {
		if fault, faulted = f.faultFor(req.Message.Token); faulted {
			latency += fault.Latency
		}
	}
	if faulted && fault.Code == FaultHang {
		f.hang(w, r)
		return
	}
	if latency > 0 && !f.sleep(w, r, latency) {
		return
	}
	if bad != nil {
		writeJSON(w, bad.status, bad.body)
		return
	}
	if faulted && fault.Code != FaultNone {
		if f.onFault != nil {
			f.onFault(req.Message.Token, fault.Code, time.Now())
		}
		writeFault(w, fault)
		return
	}

	received, bad := checkMessage(req.Message)
	if bad != nil {
		writeJSON(w, bad.status, bad.body)
		return
	}
	if req.ValidateOnly {
		writeJSON(w, http.StatusOK, f.dryRunBody)
		return
	}

	received.Name = f.namePrefix + strconv.FormatUint(f.nameSeq.Add(1), 10) + f.nameSuffix
	received.Authorization = r.Header.Get("Authorization")
	received.ProtoMajor = r.ProtoMajor
	received.At = time.Now()
	received.Arrived = arrived
	f.record(received)
	writeJSON(w, http.StatusOK, mustMarshal(sendResponse{Name: received.Name}))
}

// parseSendPath returns the project of a "/v1/projects/{p}/messages:send" path.
func parseSendPath(path string) (project string, ok bool) {
	if !strings.HasPrefix(path, sendPathPrefix) || !strings.HasSuffix(path, sendPathSuffix) ||
		len(path) <= len(sendPathPrefix)+len(sendPathSuffix) {
		return "", false
	}
	project = path[len(sendPathPrefix) : len(path)-len(sendPathSuffix)]
	if strings.Contains(project, "/") {
		return "", false
	}
	return project, true
}

func decodeSendRequest(r *http.Request, req *sendRequest) *apiError {
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer func() {
		buf.Reset()
		bodyBuffers.Put(buf)
	}()
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, maxRequestBytes+1)); err != nil {
		return invalidMessage("", "Invalid JSON payload received. Could not read the request body.")
	}
	if buf.Len() > maxRequestBytes {
		return errBodyTooBig
	}
	if err := json.Unmarshal(buf.Bytes(), req); err != nil {
		return invalidMessage("", "Invalid JSON payload received. "+err.Error())
	}
	if req.Message == nil {
		return errNoTarget
	}
	return nil
}

// checkMessage applies FCM's validation to a decoded message and returns what to record.
func checkMessage(m *wireMessage) (Received, *apiError) {
	targets := 0
	for _, t := range []string{m.Token, m.Topic, m.Condition} {
		if t != "" {
			targets++
		}
	}
	switch {
	case targets == 0:
		return Received{}, errNoTarget
	case targets > 1:
		return Received{}, errTwoTarget
	case len(m.Notification)+len(m.Data) > maxPayloadBytes:
		return Received{}, errTooBig
	}

	rec := Received{Token: m.Token, Topic: m.Topic, Condition: m.Condition}
	if len(m.Notification) > 0 {
		var n *wireNotification
		if err := json.Unmarshal(m.Notification, &n); err != nil {
			return Received{}, errBadNotif
		}
		if n != nil {
			rec.Title, rec.Body = n.Title, n.Body
		}
	}
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &rec.Data); err != nil {
			return Received{}, errBadData
		}
	}
	if m.Android != nil && m.Android.TTL != "" {
		if !validTTL(m.Android.TTL) {
			return Received{}, errBadTTL
		}
		rec.TTL = m.Android.TTL
	}
	if a := m.Android; a != nil {
		rec.CollapseKey, rec.AndroidPriority = a.CollapseKey, a.Priority
		if len(a.Notif) > 0 && string(a.Notif) != "null" {
			if err := json.Unmarshal(a.Notif, &rec.AndroidNotification); err != nil {
				return Received{}, invalidMessage("message.android.notification", "Invalid value at 'message.android.notification'.")
			}
		}
	}
	if a := m.APNS; a != nil {
		rec.APNsHeaders = a.Headers
		if len(a.Payload) > 0 && string(a.Payload) != "null" {
			var p struct {
				Aps map[string]any `json:"aps"`
			}
			if err := json.Unmarshal(a.Payload, &p); err != nil {
				return Received{}, invalidMessage("message.apns.payload", "Invalid value at 'message.apns.payload'.")
			}
			rec.APNsAps = p.Aps
		}
	}
	if w := m.Webpush; w != nil {
		rec.WebpushHeaders = w.Headers
		if w.FCMOptions != nil {
			rec.WebpushLink = w.FCMOptions.Link
		}
	}
	return rec, nil
}

// validTTL reports whether ttl is a protobuf Duration in seconds ("3.5s") within FCM's range.
func validTTL(ttl string) bool {
	digits, ok := strings.CutSuffix(ttl, "s")
	if !ok || digits == "" || strings.ContainsAny(digits, "eE+-") {
		return false
	}
	secs, err := strconv.ParseFloat(digits, 64)
	return err == nil && secs >= 0 && secs <= maxTTLSeconds
}

// sleep waits d. It reports false when the request must not be answered normally: the client
// went away, or the fake is closing (then it answers 503 itself).
func (f *Server) sleep(w http.ResponseWriter, r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	case <-f.done:
		writeJSON(w, errClosing.status, errClosing.body)
		return false
	}
}

// hang holds a request until its client gives up or the fake closes.
func (f *Server) hang(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-f.done:
		writeJSON(w, errClosing.status, errClosing.body)
	}
}

func writeFault(w http.ResponseWriter, fault Fault) {
	answer, ok := faultAnswers[fault.Code]
	if !ok {
		answer = faultAnswer{status: http.StatusInternalServerError, body: fcmErrorBody(http.StatusInternalServerError,
			"Unknown fake fault code "+fault.Code.String()+".", "INTERNAL", "INTERNAL")}
	}
	if answer.retryAfter && fault.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfterSeconds(fault.RetryAfter))
	}
	if answer.wwwAuthenticate {
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/"`)
	}
	writeJSON(w, answer.status, answer.body)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=UTF-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) // a client that went away is not the fake's problem
}

// googleError is the body of every error answer from a Google API:
// {"error":{"code":404,"message":"...","status":"NOT_FOUND","details":[...]}}.
type googleError struct {
	Error googleErrorStatus `json:"error"`
}

type googleErrorStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
	Details []any  `json:"details,omitempty"`
}

type fcmErrorDetail struct {
	Type      string `json:"@type"`
	ErrorCode string `json:"errorCode"`
}

type badRequestDetail struct {
	Type            string           `json:"@type"`
	FieldViolations []fieldViolation `json:"fieldViolations"`
}

type fieldViolation struct {
	Field       string `json:"field,omitempty"`
	Description string `json:"description"`
}

// googleErrorBody is a generic Google API error, without FCM details.
func googleErrorBody(code int, message, status string) []byte {
	return mustMarshal(googleError{Error: googleErrorStatus{Code: code, Message: message, Status: status}})
}

// fcmErrorBody is an FCM error: an FcmError detail carrying fcmCode (none when fcmCode is
// empty), then a google.rpc.BadRequest detail when there are field violations.
func fcmErrorBody(code int, message, status, fcmCode string, violations ...fieldViolation) []byte {
	e := googleErrorStatus{Code: code, Message: message, Status: status}
	if fcmCode != "" {
		e.Details = append(e.Details, fcmErrorDetail{
			Type: "type.googleapis.com/google.firebase.fcm.v1.FcmError", ErrorCode: fcmCode})
	}
	if len(violations) > 0 {
		e.Details = append(e.Details, badRequestDetail{
			Type: "type.googleapis.com/google.rpc.BadRequest", FieldViolations: violations})
	}
	return mustMarshal(googleError{Error: e})
}
