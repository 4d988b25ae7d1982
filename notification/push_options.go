package notification

import (
	"net/url"
	"time"
)

// Limits of the delivery options, from FCM's and APNs' documentation.
const (
	// MaxIdempotencyKeyLength bounds an idempotency key, in bytes.
	MaxIdempotencyKeyLength = 255
	// MaxCollapseKeyLength bounds a collapse key, in bytes: APNs refuses an
	// apns-collapse-id over 64 bytes.
	MaxCollapseKeyLength = 64
	// maxOptionLength bounds the short option strings (channel id, tag,
	// sound, thread id, category, click action).
	maxOptionLength = 255
	// maxURLLength bounds image and link URLs.
	maxURLLength = 2048
)

// AndroidPriority is FCM's delivery priority for Android: "normal" (the
// default, may wait for the device's maintenance window) or "high" (wakes
// the device; for messages the user acts on at once).
type AndroidPriority string

// Android priorities.
const (
	AndroidPriorityNormal AndroidPriority = "normal"
	AndroidPriorityHigh   AndroidPriority = "high"
)

// InterruptionLevel is how an iOS 15+ notification interrupts the user.
type InterruptionLevel string

// APNs interruption levels.
const (
	InterruptionPassive       InterruptionLevel = "passive"
	InterruptionActive        InterruptionLevel = "active"
	InterruptionTimeSensitive InterruptionLevel = "time-sensitive"
	InterruptionCritical      InterruptionLevel = "critical"
)

// AndroidOptions are what an Android push sets beyond the title and body.
// Every field is optional.
type AndroidOptions struct {
	// Priority is the delivery priority. Empty means FCM's default (normal).
	Priority AndroidPriority `json:"priority,omitempty"`
	// ChannelID is the notification channel (Android 8+) the app created.
	ChannelID string `json:"channel_id,omitempty"`
	// ImageURL is an https image shown in the notification.
	ImageURL string `json:"image,omitempty"`
	// ClickAction is the intent action (or deep link the app maps) opened
	// when the user taps the notification.
	ClickAction string `json:"click_action,omitempty"`
	// Tag replaces an earlier notification with the same tag in the
	// notification drawer.
	Tag string `json:"tag,omitempty"`
	// BadgeUnread sets the notification count to the recipient's unread
	// inbox count when the push is claimed.
	BadgeUnread bool `json:"badge_unread,omitempty"`
}

// APNsOptions are what an iOS push sets beyond the title and body. Every
// field is optional.
type APNsOptions struct {
	// Badge is the app icon's badge number. Nil leaves the badge as it is.
	Badge *int `json:"badge,omitempty"`
	// BadgeUnread sets the badge to the recipient's unread inbox count when
	// the push is claimed (it wins over Badge).
	BadgeUnread bool `json:"badge_unread,omitempty"`
	// Sound is the sound file to play, or "default".
	Sound string `json:"sound,omitempty"`
	// ThreadID groups notifications in Notification Center.
	ThreadID string `json:"thread_id,omitempty"`
	// Category names the app's actionable notification category.
	Category string `json:"category,omitempty"`
	// MutableContent lets the app's notification service extension modify
	// the notification (for example to download an image).
	MutableContent bool `json:"mutable_content,omitempty"`
	// InterruptionLevel is how the notification interrupts (iOS 15+).
	InterruptionLevel InterruptionLevel `json:"interruption_level,omitempty"`
}

// WebOptions are what a web push sets beyond the title and body.
type WebOptions struct {
	// Link is the https URL opened when the user clicks the notification.
	Link string `json:"link,omitempty"`
}

// PushOptions are how a notification is pushed, beyond what it says: the
// collapse key, the expiry and the platform options. A Message carries them
// to the provider.
type PushOptions struct {
	// CollapseKey: see Draft.CollapseKey.
	CollapseKey string
	// ExpiresAt: see Draft.ExpiresAt.
	ExpiresAt time.Time
	// Android, APNs and Web are the platform options, nil when unset.
	Android *AndroidOptions
	APNs    *APNsOptions
	Web     *WebOptions
	// Badge is the recipient's unread inbox count, read when the delivery
	// was claimed, when the Android or APNs options ask for it; else nil.
	Badge *int
}

// TTLAt returns the time to live to give the provider for a push at now:
// the content's TTL, shortened to what remains before ExpiresAt (at least
// one second), within 0 and MaxTTL. Zero means the provider's default.
func (m Message) TTLAt(now time.Time) time.Duration {
	ttl := m.TTL
	if !m.ExpiresAt.IsZero() {
		left := max(m.ExpiresAt.Sub(now).Truncate(time.Second), time.Second)
		if ttl == 0 || left < ttl {
			ttl = left
		}
	}
	return min(ttl, MaxTTL)
}

// Expired reports whether the push can no longer go out at now.
func (m Message) Expired(now time.Time) bool {
	return !m.ExpiresAt.IsZero() && !now.Before(m.ExpiresAt)
}

func (o *AndroidOptions) validate() []error {
	if o == nil {
		return nil
	}
	var errs []error
	if o.Priority != "" && o.Priority != AndroidPriorityNormal && o.Priority != AndroidPriorityHigh {
		errs = append(errs, &FieldError{Field: "android.priority", Err: ErrInvalidValue})
	}
	errs = append(errs, checkText("android.channel_id", o.ChannelID, false, maxOptionLength)...)
	errs = append(errs, checkURL("android.image", o.ImageURL)...)
	errs = append(errs, checkText("android.click_action", o.ClickAction, false, maxOptionLength)...)
	errs = append(errs, checkText("android.tag", o.Tag, false, maxOptionLength)...)
	return errs
}

func (o *APNsOptions) validate() []error {
	if o == nil {
		return nil
	}
	var errs []error
	if o.Badge != nil && *o.Badge < 0 {
		errs = append(errs, &FieldError{Field: "apns.badge", Err: ErrInvalidValue})
	}
	errs = append(errs, checkText("apns.sound", o.Sound, false, maxOptionLength)...)
	errs = append(errs, checkText("apns.thread_id", o.ThreadID, false, maxOptionLength)...)
	errs = append(errs, checkText("apns.category", o.Category, false, maxOptionLength)...)
	switch o.InterruptionLevel {
	case "", InterruptionPassive, InterruptionActive, InterruptionTimeSensitive, InterruptionCritical:
	default:
		errs = append(errs, &FieldError{Field: "apns.interruption_level", Err: ErrInvalidValue})
	}
	return errs
}

func (o *WebOptions) validate() []error {
	if o == nil {
		return nil
	}
	return checkURL("web.link", o.Link)
}

// checkURL accepts "" or an absolute https URL: FCM requires https for
// images and web push links.
func checkURL(field, s string) []error {
	if s == "" {
		return nil
	}
	if errs := checkText(field, s, false, maxURLLength); errs != nil {
		return errs
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return []error{&FieldError{Field: field, Err: ErrInvalidURL}}
	}
	return nil
}

func (o *AndroidOptions) clone() *AndroidOptions {
	if o == nil {
		return nil
	}
	c := *o
	return &c
}

func (o *APNsOptions) clone() *APNsOptions {
	if o == nil {
		return nil
	}
	c := *o
	if o.Badge != nil {
		b := *o.Badge
		c.Badge = &b
	}
	return &c
}

func (o *WebOptions) clone() *WebOptions {
	if o == nil {
		return nil
	}
	c := *o
	return &c
}
