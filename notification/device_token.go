package notification

import (
	"errors"
	"time"
	"unicode"
)

// MaxTokenLength bounds a device token, in bytes. Real FCM tokens are a few
// hundred bytes; the bound keeps every index on a token (Postgres refuses a
// btree entry over 2,704 bytes, and the deliveries' (notification, token)
// key adds 16) well within limits. Register refuses longer tokens with
// ErrInvalidToken, and expansion skips any longer token found in the table.
const MaxTokenLength = 1024

// Platform is the kind of device a token belongs to.
type Platform string

// Platforms Herald knows.
const (
	PlatformAndroid Platform = "android"
	PlatformIOS     Platform = "ios"
	PlatformWeb     Platform = "web"
)

// Valid reports whether p is one of the Platform constants.
func (p Platform) Valid() bool {
	return p == PlatformAndroid || p == PlatformIOS || p == PlatformWeb
}

// DeviceToken is one FCM registration token of one user's device: the
// address a delivery is sent to. A token belongs to one user at a time;
// registering it for another user moves it.
type DeviceToken struct {
	token        string
	userID       string
	platform     Platform
	registeredAt time.Time
	lastSeenAt   time.Time
}

// NewDeviceToken validates and returns a token registered for userID at now.
// It fails with *FieldError values wrapping ErrInvalidToken, ErrRequired,
// ErrTooLong, ErrInvalidUTF8 or ErrUnknownPlatform.
func NewDeviceToken(userID, token string, platform Platform, now time.Time) (*DeviceToken, error) {
	var errs []error
	errs = append(errs, checkText("user_id", userID, true, MaxRecipientLength)...)
	if err := ValidateToken(token); err != nil {
		errs = append(errs, err)
	}
	if !platform.Valid() {
		errs = append(errs, &FieldError{Field: "platform", Err: ErrUnknownPlatform})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &DeviceToken{token: token, userID: userID, platform: platform, registeredAt: now, lastSeenAt: now}, nil
}

// DeviceTokenFromDatabase rebuilds a stored token without validating it. It
// is only for adapters reading what Herald wrote.
func DeviceTokenFromDatabase(userID, token string, platform Platform, registeredAt, lastSeenAt time.Time) *DeviceToken {
	return &DeviceToken{token: token, userID: userID, platform: platform, registeredAt: registeredAt, lastSeenAt: lastSeenAt}
}

// ValidateToken reports whether token can be an FCM registration token: not
// empty, at most MaxTokenLength bytes, printable ASCII without spaces. It
// returns a *FieldError wrapping ErrInvalidToken.
func ValidateToken(token string) error {
	if token == "" || len(token) > MaxTokenLength {
		return &FieldError{Field: "token", Err: ErrInvalidToken}
	}
	for _, r := range token {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return &FieldError{Field: "token", Err: ErrInvalidToken}
		}
	}
	return nil
}

// Token returns the FCM registration token.
func (t *DeviceToken) Token() string { return t.token }

// UserID returns the user the token belongs to.
func (t *DeviceToken) UserID() string { return t.userID }

// Platform returns the device's platform.
func (t *DeviceToken) Platform() Platform { return t.platform }

// RegisteredAt returns when the token was registered for its current user.
func (t *DeviceToken) RegisteredAt() time.Time { return t.registeredAt }

// LastSeenAt returns when the app last reported the token.
func (t *DeviceToken) LastSeenAt() time.Time { return t.lastSeenAt }

// IsStale reports whether the app has not reported the token for longer than
// maxAge. FCM considers tokens unused for a month stale.
func (t *DeviceToken) IsStale(now time.Time, maxAge time.Duration) bool {
	return now.Sub(t.lastSeenAt) > maxAge
}
