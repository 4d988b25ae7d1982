package notification

import (
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits Herald enforces before anything reaches FCM.
const (
	// MaxPayloadBytes is FCM's limit on a message payload: the JSON of the
	// notification title and body and the data map.
	MaxPayloadBytes = 4096
	// MaxTTL is the longest time to live FCM accepts.
	MaxTTL = 28 * 24 * time.Hour
	// MaxRecipientLength bounds a recipient (user) id.
	MaxRecipientLength = 255
	// MaxTypeLength bounds a notification type.
	MaxTypeLength = 100
	// DefaultIdempotencyWindow is how long an idempotency key holds when
	// neither the draft nor the configuration says.
	DefaultIdempotencyWindow = 24 * time.Hour
	// MaxIdempotencyWindow is the longest window a key may hold.
	MaxIdempotencyWindow = 30 * 24 * time.Hour
)

// reservedDataKeys are data keys FCM rejects; keys starting with "google" or
// "gcm" are reserved too.
var reservedDataKeys = map[string]bool{"from": true, "notification": true, "message_type": true}

// Content is what a notification says: the text shown on the device and the
// data handed to the app. It is what a rule produces and what a push carries.
type Content struct {
	// Title and Body are shown by the device. Either may be empty for a
	// data-only push, but a notification must carry a title, a body or data.
	Title string
	Body  string
	// Data is delivered to the app as string pairs.
	Data map[string]string
	// TTL is how long FCM keeps the push for an offline device. Zero means
	// FCM's default (28 days).
	TTL time.Duration
}

// Audience is who a broadcast reaches: every registered device, or those of
// some platforms.
type Audience struct {
	// Platforms limits the broadcast to these platforms. Empty means all.
	Platforms []Platform `json:"platforms,omitempty"`
}

// Draft is a notification a rule wants to send: who gets it, its type, and
// what it says. Herald gives it an id and a creation time.
type Draft struct {
	// Recipient is the host application's user id. It must be empty for a
	// broadcast.
	Recipient string
	// Broadcast, when set, sends the notification to every device in the
	// audience instead of one recipient's. A broadcast is expanded in
	// bounded chunks however large the audience, and appears in nobody's
	// inbox.
	Broadcast *Audience
	// Type names the kind of notification, for example "comment_created".
	// A recipient may mute a type for push (see Preferences).
	Type string
	// Urgent pushes bypass the recipient's quiet hours (not their mutes):
	// for what cannot wait until morning, such as a security alert.
	Urgent bool
	Content

	// IdempotencyKey, when set, makes raising the same draft again harmless:
	// while the key's window lasts, a second notification to the same
	// recipient (or a second broadcast) with the same key is not created,
	// nothing more is pushed, and Raise returns the first notification.
	IdempotencyKey string
	// IdempotencyWindow is how long the key holds from the notification's
	// creation, by the database's clock. Zero means
	// herald.Config.IdempotencyWindow (default 24h); at most
	// MaxIdempotencyWindow.
	IdempotencyWindow time.Duration
	// SendAt, when set, holds the pushes until then; the inbox shows the
	// notification from then too. The zero time (or a past one) sends at
	// once; one after the year 9999 fails validation.
	SendAt time.Time
	// ExpiresAt, when set, is when the notification stops being worth
	// pushing: a delivery that could not go out before then (an outage,
	// quiet hours) ends expired, never pushed, and each push tells FCM to
	// keep it only for the time that remains (Content.TTL, if shorter,
	// still applies). It must be after SendAt and not after the year 9999;
	// Raise refuses one the database's clock says has passed.
	ExpiresAt time.Time
	// CollapseKey, when set, makes a newer notification to the same
	// recipient (or a newer broadcast) with the same key replace older
	// ones: their deliveries not yet pushed end superseded, and FCM's
	// collapse_key and apns-collapse-id are set so devices replace rather
	// than stack. At most MaxCollapseKeyLength bytes.
	CollapseKey string
	// Android, APNs and Web are the platform options. Nil means none.
	Android *AndroidOptions
	APNs    *APNsOptions
	Web     *WebOptions
}

// Notification is one message to one user. It is the in-app inbox entry and
// the source of one delivery per device of the recipient.
type Notification struct {
	id        uuid.UUID
	recipient string
	audience  *Audience
	typ       string
	urgent    bool
	content   Content
	createdAt time.Time
	readAt    time.Time

	idempotencyKey    string
	idempotencyWindow time.Duration
	idempotentUntil   time.Time
	sendAt            time.Time
	push              PushOptions
	supersededAt      time.Time
}

// NewNotification validates d and returns the notification. It fails with
// *FieldError values (joined) wrapping ErrRequired, ErrTooLong,
// ErrInvalidUTF8, ErrReservedDataKey or ErrTTLOutOfRange, or a
// *PayloadTooLargeError.
//
// createdAt is the raising server's reading of the time. Its clock may be
// minutes off the other servers', so it decides nothing the notification
// is judged by: storage stamps the database's time over it (see
// StampCreatedAt), and whether an ExpiresAt has passed is for CheckExpiry
// to say against the database's clock. The checks here are structural.
func NewNotification(id uuid.UUID, d Draft, createdAt time.Time) (*Notification, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if id == uuid.Nil {
		return nil, &FieldError{Field: "id", Err: ErrRequired}
	}
	if createdAt.IsZero() {
		return nil, &FieldError{Field: "created_at", Err: ErrRequired}
	}
	n := &Notification{
		id:        id,
		recipient: d.Recipient,
		audience:  d.Broadcast.clone(),
		typ:       d.Type,
		urgent:    d.Urgent,
		content:   d.Content.clone(),
		createdAt: createdAt,
		sendAt:    d.SendAt,
		push: PushOptions{CollapseKey: d.CollapseKey, ExpiresAt: d.ExpiresAt,
			Android: d.Android.clone(), APNs: d.APNs.clone(), Web: d.Web.clone()},
	}
	// A send time is kept even if createdAt (the raising server's clock)
	// says it has passed: the database compares it with its own clock, so a
	// past one sends at once, and a server whose clock runs ahead no longer
	// pushes early what is still to come. Only one before the year 1 (which
	// neither RFC 3339 nor Go's JSON can write) is dropped.
	if !d.SendAt.After(time.Time{}) {
		n.sendAt = time.Time{}
	}
	if d.IdempotencyKey != "" {
		window := d.IdempotencyWindow
		if window == 0 {
			window = DefaultIdempotencyWindow
		}
		n.idempotencyKey, n.idempotencyWindow = d.IdempotencyKey, window
		n.idempotentUntil = createdAt.Add(window)
	}
	return n, nil
}

// CheckExpiry fails with a *FieldError wrapping ErrExpiresTooEarly when
// the notification has an ExpiresAt that is not after now: it could never
// be pushed. now must be the database's clock, which decides everything
// due or late, never one server's.
func (n *Notification) CheckExpiry(now time.Time) error {
	if !n.push.ExpiresAt.IsZero() && !n.push.ExpiresAt.After(now) {
		return &FieldError{Field: "expires_at", Err: ErrExpiresTooEarly}
	}
	return nil
}

// StampCreatedAt replaces the creation time by the one the database
// stamped when it stored the notification, and moves the end of the
// idempotency window with it. It is only for adapters storing a new
// notification.
func (n *Notification) StampCreatedAt(at time.Time) {
	n.createdAt = at
	if n.idempotencyKey != "" {
		n.idempotentUntil = at.Add(n.idempotencyWindow)
	}
}

// NotificationFromDatabase rebuilds a stored notification without validating
// it. It is only for adapters reading what Herald wrote. audience is nil
// unless the notification is a broadcast. The delivery settings are
// restored with RestoreDeliverySettings.
func NotificationFromDatabase(id uuid.UUID, recipient string, audience *Audience, typ string, content Content, createdAt, readAt time.Time) *Notification {
	return &Notification{id: id, recipient: recipient, audience: audience, typ: typ, content: content, createdAt: createdAt, readAt: readAt}
}

// DeliverySettings are the stored settings of a notification beyond its
// content: its idempotency key and window, send time, push options, and
// when a newer notification with its collapse key superseded it.
type DeliverySettings struct {
	IdempotencyKey  string
	IdempotentUntil time.Time
	SendAt          time.Time
	Push            PushOptions
	SupersededAt    time.Time
}

// RestoreDeliverySettings sets what NotificationFromDatabase does not. It
// is only for adapters reading what Herald wrote.
func (n *Notification) RestoreDeliverySettings(s DeliverySettings) {
	n.idempotencyKey, n.idempotentUntil, n.sendAt = s.IdempotencyKey, s.IdempotentUntil, s.SendAt
	n.push, n.supersededAt = s.Push, s.SupersededAt
}

// IdempotencyKey returns the draft's idempotency key, or "".
func (n *Notification) IdempotencyKey() string { return n.idempotencyKey }

// IdempotencyWindow returns how long the idempotency key holds from the
// creation, or zero when there is no key. A notification read back from
// the database knows only IdempotentUntil and returns zero.
func (n *Notification) IdempotencyWindow() time.Duration { return n.idempotencyWindow }

// IdempotentUntil returns when the idempotency key stops holding, or the
// zero time when there is no key.
func (n *Notification) IdempotentUntil() time.Time { return n.idempotentUntil }

// SendAt returns when the pushes may start and the inbox shows the
// notification, or the zero time for at once.
func (n *Notification) SendAt() time.Time { return n.sendAt }

// ExpiresAt returns when the notification stops being pushed, or the zero
// time.
func (n *Notification) ExpiresAt() time.Time { return n.push.ExpiresAt }

// CollapseKey returns the collapse key, or "".
func (n *Notification) CollapseKey() string { return n.push.CollapseKey }

// PushOptions returns the collapse key, expiry and platform options. The
// option structs are shared: do not modify them.
func (n *Notification) PushOptions() PushOptions { return n.push }

// SupersededAt returns when a newer notification with the same collapse key
// replaced this one, or the zero time.
func (n *Notification) SupersededAt() time.Time { return n.supersededAt }

// ID returns the notification's id.
func (n *Notification) ID() uuid.UUID { return n.id }

// Recipient returns the recipient's user id, or "" for a broadcast.
func (n *Notification) Recipient() string { return n.recipient }

// Broadcast returns the audience of a broadcast, or nil.
func (n *Notification) Broadcast() *Audience { return n.audience.clone() }

// Type returns the notification type.
func (n *Notification) Type() string { return n.typ }

// Urgent reports whether its pushes bypass the recipient's quiet hours.
// A notification read back with NotificationFromDatabase is not urgent:
// urgency matters only to the push, which the database decides.
func (n *Notification) Urgent() bool { return n.urgent }

// Content returns what the notification says. The data map is shared: do not
// modify it.
func (n *Notification) Content() Content { return n.content }

// CreatedAt returns when the notification was created: once stored, by the
// database's clock.
func (n *Notification) CreatedAt() time.Time { return n.createdAt }

// ReadAt returns when the recipient read it, or the zero time.
func (n *Notification) ReadAt() time.Time { return n.readAt }

// IsRead reports whether the recipient has read it.
func (n *Notification) IsRead() bool { return !n.readAt.IsZero() }

// MarkRead records that the recipient read it. Reading twice keeps the first time.
func (n *Notification) MarkRead(at time.Time) {
	if n.readAt.IsZero() {
		n.readAt = at
	}
}

// maxStoredTime is the latest SendAt or ExpiresAt a draft may have: the
// end of the year 9999, far inside Postgres's range and the last year
// RFC 3339 (and Go's JSON) can write.
var maxStoredTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)

// Validate checks a draft against Herald's and FCM's rules and reports every
// problem at once.
func (d Draft) Validate() error {
	var errs []error
	if d.Broadcast == nil {
		errs = append(errs, checkText("recipient", d.Recipient, true, MaxRecipientLength)...)
	} else {
		if d.Recipient != "" {
			errs = append(errs, &FieldError{Field: "recipient", Err: ErrRecipientAndBroadcast})
		}
		for _, p := range d.Broadcast.Platforms {
			if !p.Valid() {
				errs = append(errs, &FieldError{Field: "broadcast.platforms", Err: ErrUnknownPlatform})
			}
		}
	}
	errs = append(errs, checkText("type", d.Type, true, MaxTypeLength)...)
	errs = append(errs, checkText("idempotency_key", d.IdempotencyKey, false, MaxIdempotencyKeyLength)...)
	if d.IdempotencyWindow < 0 || d.IdempotencyWindow > MaxIdempotencyWindow {
		errs = append(errs, &FieldError{Field: "idempotency_window", Err: ErrInvalidValue})
	}
	errs = append(errs, checkText("collapse_key", d.CollapseKey, false, MaxCollapseKeyLength)...)
	// Postgres stores times up to the year 294276: a later one would fail
	// only at the insert, aborting the host's transaction.
	if d.SendAt.After(maxStoredTime) {
		errs = append(errs, &FieldError{Field: "send_at", Err: ErrInvalidValue})
	}
	if d.ExpiresAt.After(maxStoredTime) {
		errs = append(errs, &FieldError{Field: "expires_at", Err: ErrInvalidValue})
	}
	if !d.ExpiresAt.IsZero() && !d.SendAt.IsZero() && !d.ExpiresAt.After(d.SendAt) {
		errs = append(errs, &FieldError{Field: "expires_at", Err: ErrExpiresTooEarly})
	}
	errs = append(errs, d.Android.validate()...)
	errs = append(errs, d.APNs.validate()...)
	errs = append(errs, d.Web.validate()...)
	contentErrs := d.Content.validate()
	if len(contentErrs) == 0 {
		if size := d.PayloadSize(); size > MaxPayloadBytes {
			contentErrs = append(contentErrs, &PayloadTooLargeError{Size: size, Limit: MaxPayloadBytes})
		}
	}
	errs = append(errs, contentErrs...)
	return errors.Join(errs...)
}

// PayloadSize is the size in bytes FCM counts against its 4096-byte limit
// for this draft: the content's payload (see Content.PayloadSize) plus the
// JSON of the platform options, counted for every platform at once, so a
// draft that passes fits whichever device it reaches.
func (d Draft) PayloadSize() int {
	size := d.Content.PayloadSize()
	if d.Android == nil && d.APNs == nil && d.Web == nil && d.CollapseKey == "" {
		return size
	}
	b, err := json.Marshal(struct {
		CollapseKey string          `json:"collapse_key,omitempty"`
		Android     *AndroidOptions `json:"android,omitempty"`
		APNs        *APNsOptions    `json:"apns,omitempty"`
		Web         *WebOptions     `json:"web,omitempty"`
	}{d.CollapseKey, d.Android, d.APNs, d.Web})
	if err != nil { // cannot happen for these types
		return MaxPayloadBytes + 1
	}
	return size + len(b)
}

func (c Content) validate() []error {
	var errs []error
	errs = append(errs, checkText("title", c.Title, false, 0)...)
	errs = append(errs, checkText("body", c.Body, false, 0)...)
	if c.Title == "" && c.Body == "" && len(c.Data) == 0 {
		errs = append(errs, &FieldError{Field: "content", Err: ErrRequired})
	}
	for k, v := range c.Data {
		if k == "" {
			errs = append(errs, &FieldError{Field: "data key", Err: ErrRequired})
			continue
		}
		if !validText(k) {
			errs = append(errs, &FieldError{Field: "data key", Err: ErrInvalidUTF8})
			continue
		}
		// The field's name is made only for an error: a valid key costs
		// no allocation.
		if IsReservedDataKey(k) {
			errs = append(errs, &FieldError{Field: "data." + k, Err: ErrReservedDataKey})
		}
		if !validText(v) {
			errs = append(errs, &FieldError{Field: "data." + k, Err: ErrInvalidUTF8})
		}
	}
	if c.TTL < 0 || c.TTL > MaxTTL {
		errs = append(errs, &FieldError{Field: "ttl", Err: ErrTTLOutOfRange})
	}
	return errs
}

// PayloadSize is the size in bytes of the payload FCM counts against its
// 4096-byte limit: the JSON of the title, body and data,
// {"notification":{"title":...,"body":...},"data":{...}} with the empty
// parts left out, as encoding/json writes it. It is counted, not written:
// every Raise validates every notification, and marshalling cost six
// allocations each.
func (c Content) PayloadSize() int {
	size := len(`{}`)
	if c.Title != "" || c.Body != "" {
		size += len(`"notification":{}`)
		if c.Title != "" {
			size += len(`"title":`) + jsonStringLen(c.Title)
		}
		if c.Title != "" && c.Body != "" {
			size += len(`,`)
		}
		if c.Body != "" {
			size += len(`"body":`) + jsonStringLen(c.Body)
		}
		if len(c.Data) > 0 {
			size += len(`,`)
		}
	}
	if len(c.Data) > 0 {
		size += len(`"data":{}`) + len(c.Data) - 1 // the commas between entries
		for k, v := range c.Data {
			size += jsonStringLen(k) + len(`:`) + jsonStringLen(v)
		}
	}
	return size
}

// invalidByteJSONLen is what encoding/json writes for a byte that is not
// UTF-8, asked of it once: \ufffd (six bytes), or U+FFFD itself (three)
// when encoding/json is built on encoding/json/v2 (GOEXPERIMENT=jsonv2).
var invalidByteJSONLen = func() int {
	b, err := json.Marshal("\xff")
	if err != nil {
		return len(`\ufffd`)
	}
	return len(b) - len(`""`)
}()

// jsonStringLen is the length of s as encoding/json writes it, quotes
// included: `\`, `"` and \b, \f, \n, \r, \t take two bytes, other control
// bytes, <, > and & (HTML-escaped), U+2028 and U+2029 six, and each invalid
// byte invalidByteJSONLen.
func jsonStringLen(s string) int {
	n := len(`""`)
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '\\', b == '"', b == '\b', b == '\f', b == '\n', b == '\r', b == '\t':
				n += 2
			case b < 0x20, b == '<', b == '>', b == '&':
				n += len(`\u0000`)
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += invalidByteJSONLen
		} else if r == '\u2028' || r == '\u2029' {
			n += len(`\u2028`)
		} else {
			n += size
		}
		i += size
	}
	return n
}

func (a *Audience) clone() *Audience {
	if a == nil {
		return nil
	}
	return &Audience{Platforms: append([]Platform(nil), a.Platforms...)}
}

func (c Content) clone() Content {
	if c.Data != nil {
		data := make(map[string]string, len(c.Data))
		for k, v := range c.Data {
			data[k] = v
		}
		c.Data = data
	}
	return c
}

// IsReservedDataKey reports whether FCM reserves the data key k.
func IsReservedDataKey(k string) bool {
	lower := strings.ToLower(k)
	return reservedDataKeys[lower] || strings.HasPrefix(lower, "google") || strings.HasPrefix(lower, "gcm")
}

func checkText(field, s string, required bool, maxLen int) []error {
	switch {
	case s == "" && required:
		return []error{&FieldError{Field: field, Err: ErrRequired}}
	case !validText(s):
		return []error{&FieldError{Field: field, Err: ErrInvalidUTF8}}
	case maxLen > 0 && len(s) > maxLen:
		return []error{&FieldError{Field: field, Err: ErrTooLong}}
	}
	return nil
}

// validText reports whether s is valid UTF-8 without NUL bytes (Postgres
// text cannot hold NUL).
func validText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}
