package adapters

import (
	"regexp"
	"strconv"
	"time"

	"firebase.google.com/go/v4/messaging"

	"github.com/herald-push/herald/notification"
)

// webpushTopic is what the Web Push protocol accepts as a Topic header (at
// most 32 URL-safe base64 characters); a longer collapse key sets no topic.
var webpushTopic = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// fcmMessage builds the FCM v1 message for msg pushed at now: the content,
// the time to live left (msg.TTLAt), the collapse key, and the platform
// options. When the token's platform is known only that platform's block is
// sent; otherwise every block is.
func fcmMessage(msg notification.Message, now time.Time) *messaging.Message {
	p := &fcmMessageParts{message: messaging.Message{Token: msg.Token, Data: msg.Data}}
	m := &p.message
	if msg.Title != "" || msg.Body != "" {
		p.notification = messaging.Notification{Title: msg.Title, Body: msg.Body}
		m.Notification = &p.notification
	}
	all := msg.Platform == ""
	ttl := msg.TTLAt(now)
	if all || msg.Platform == notification.PlatformAndroid {
		m.Android = androidConfig(&p.android, msg, ttl)
	}
	if all || msg.Platform == notification.PlatformIOS {
		m.APNS = apnsConfig(msg, ttl, now)
	}
	if all || msg.Platform == notification.PlatformWeb {
		m.Webpush = webpushConfig(msg, ttl)
	}
	return m
}

// fcmMessageParts is what a push's SDK message points to on the usual path
// (the message, its notification, and an Android token's config with its
// time to live), in one allocation rather than four. APNs' and web push's
// configs hold maps, made apart anyway.
type fcmMessageParts struct {
	message      messaging.Message
	notification messaging.Notification
	android      androidParts
}

// androidParts is an Android config and the time to live it points to.
type androidParts struct {
	config messaging.AndroidConfig
	ttl    time.Duration
}

// androidConfig fills in p and returns its config, or nil when the push
// sets nothing for Android.
func androidConfig(p *androidParts, msg notification.Message, ttl time.Duration) *messaging.AndroidConfig {
	c := &p.config
	c.CollapseKey = msg.CollapseKey
	if ttl > 0 {
		p.ttl = ttl
		c.TTL = &p.ttl
	}
	if o := msg.Android; o != nil {
		c.Priority = string(o.Priority)
		if o.ChannelID != "" || o.ImageURL != "" || o.ClickAction != "" || o.Tag != "" || o.BadgeUnread {
			n := &messaging.AndroidNotification{ChannelID: o.ChannelID, ImageURL: o.ImageURL,
				ClickAction: o.ClickAction, Tag: o.Tag}
			if o.BadgeUnread && msg.Badge != nil {
				count := *msg.Badge
				n.NotificationCount = &count
			}
			c.Notification = n
		}
	}
	if c.CollapseKey == "" && c.TTL == nil && c.Priority == "" && c.Notification == nil {
		return nil
	}
	return c
}

func apnsConfig(msg notification.Message, ttl time.Duration, now time.Time) *messaging.APNSConfig {
	headers := map[string]string{}
	if ttl > 0 {
		headers["apns-expiration"] = strconv.FormatInt(now.Add(ttl).Unix(), 10)
	}
	if msg.CollapseKey != "" {
		headers["apns-collapse-id"] = msg.CollapseKey
	}
	c := &messaging.APNSConfig{}
	if o := msg.APNs; o != nil {
		aps := &messaging.Aps{Badge: o.Badge, Sound: o.Sound, ThreadID: o.ThreadID, Category: o.Category,
			MutableContent: o.MutableContent}
		if o.BadgeUnread && msg.Badge != nil {
			badge := *msg.Badge
			aps.Badge = &badge
		}
		if o.InterruptionLevel != "" {
			aps.CustomData = map[string]any{"interruption-level": string(o.InterruptionLevel)}
		}
		c.Payload = &messaging.APNSPayload{Aps: aps}
	}
	if len(headers) > 0 {
		c.Headers = headers
	}
	if c.Headers == nil && c.Payload == nil {
		return nil
	}
	return c
}

func webpushConfig(msg notification.Message, ttl time.Duration) *messaging.WebpushConfig {
	headers := map[string]string{}
	if ttl > 0 {
		headers["TTL"] = strconv.FormatInt(int64(ttl/time.Second), 10)
	}
	if webpushTopic.MatchString(msg.CollapseKey) {
		headers["Topic"] = msg.CollapseKey
	}
	c := &messaging.WebpushConfig{}
	if msg.Web != nil && msg.Web.Link != "" {
		c.FCMOptions = &messaging.WebpushFCMOptions{Link: msg.Web.Link}
	}
	if len(headers) > 0 {
		c.Headers = headers
	}
	if c.Headers == nil && c.FCMOptions == nil {
		return nil
	}
	return c
}
