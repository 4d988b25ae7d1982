package notification

import (
	"errors"
	"fmt"
	"time"
)

// Preference errors, wrapped in a *FieldError by Preferences.Validate.
var (
	// ErrInvalidTimeZone reports a time zone that is not an IANA name
	// known to both Go and Postgres.
	ErrInvalidTimeZone = errors.New("unknown time zone")
	// ErrInvalidClock reports a quiet-hours time that is not "HH:MM".
	ErrInvalidClock = errors.New("not a time of day as HH:MM or HH:MM:SS")
)

// MaxMutedTypes bounds how many types one user may mute.
const MaxMutedTypes = 100

// Preferences are one user's choices about pushes. They never keep a
// notification out of the inbox: they decide only whether, and when, it is
// pushed to the user's devices.
type Preferences struct {
	// Muted lists notification types (Draft.Type) the user does not want
	// pushed. A muted notification still reaches the inbox; its deliveries
	// end StatusMuted, urgent or not.
	Muted []string `json:"muted,omitempty"`
	// QuietHours is a daily window, in TimeZone, during which pushes wait
	// for its end (unless the draft is Urgent). The zero value means none.
	QuietHours QuietHours `json:"quiet_hours"`
	// TimeZone is the user's IANA time zone, for example "Asia/Seoul".
	// Empty means UTC.
	TimeZone string `json:"time_zone,omitempty"`
}

// QuietHours is a daily window of local times "HH:MM" (24-hour clock;
// "HH:MM:SS" is accepted too).
// Start later than End crosses midnight: 22:00 to 07:00 is the night.
// Start is inside the window, End is not.
type QuietHours struct {
	Start string `json:"start,omitempty"`
	End   string `json:"end,omitempty"`
}

// IsZero reports whether there are no quiet hours.
func (q QuietHours) IsZero() bool { return q.Start == "" && q.End == "" }

// Validate reports every problem at once, as *FieldError values wrapping
// ErrRequired, ErrTooLong, ErrInvalidUTF8, ErrInvalidClock or
// ErrInvalidTimeZone. The time zone is checked against Go's zone database
// here; Herald checks it against Postgres's too when it stores it. A Muted
// list over MaxMutedTypes is one ErrTooLong, and only its first
// MaxMutedTypes entries are checked, so the error stays small.
func (p Preferences) Validate() error {
	var errs []error
	muted := p.Muted
	if len(muted) > MaxMutedTypes {
		errs = append(errs, &FieldError{Field: "muted", Err: ErrTooLong})
		// Only the entries that could have been kept are checked: one
		// error per entry of a list passed straight through made an
		// error of megabytes.
		muted = muted[:MaxMutedTypes]
	}
	for _, t := range muted {
		errs = append(errs, checkText("muted", t, true, MaxTypeLength)...)
	}
	if !p.QuietHours.IsZero() {
		start, errStart := parseClock(p.QuietHours.Start)
		end, errEnd := parseClock(p.QuietHours.End)
		if errStart != nil {
			errs = append(errs, &FieldError{Field: "quiet_hours.start", Err: ErrInvalidClock})
		}
		if errEnd != nil {
			errs = append(errs, &FieldError{Field: "quiet_hours.end", Err: ErrInvalidClock})
		}
		if errStart == nil && errEnd == nil && start == end {
			errs = append(errs, &FieldError{Field: "quiet_hours", Err: fmt.Errorf("%w: start equals end", ErrInvalidClock)})
		}
	}
	if _, err := p.Location(); err != nil {
		errs = append(errs, &FieldError{Field: "time_zone", Err: ErrInvalidTimeZone})
	}
	return errors.Join(errs...)
}

// Location returns the user's time zone (UTC when TimeZone is empty).
func (p Preferences) Location() (*time.Location, error) {
	if p.TimeZone == "" {
		return time.UTC, nil
	}
	// "Local" and "localtime" (a link to /etc/localtime in Debian's zone
	// database) are the server's zone, which Go and Postgres read on
	// different machines: never a user's.
	if !validText(p.TimeZone) || p.TimeZone == "Local" || p.TimeZone == "localtime" {
		return nil, ErrInvalidTimeZone
	}
	loc, err := time.LoadLocation(p.TimeZone)
	if err != nil {
		return nil, ErrInvalidTimeZone
	}
	return loc, nil
}

// IsMuted reports whether notifications of type typ are muted for push.
func (p Preferences) IsMuted(typ string) bool {
	for _, m := range p.Muted {
		if m == typ {
			return true
		}
	}
	return false
}

// PushAt returns when a push due at t may go out under these preferences:
// t itself, or for a push that is not urgent and falls in the quiet hours,
// the end of that window in the user's time zone. It is the rule Herald's
// database applies (herald_quiet_until), in Go, for hosts that show it; an
// invalid time zone or window is treated as none.
func (p Preferences) PushAt(t time.Time, urgent bool) time.Time {
	if urgent || p.QuietHours.IsZero() {
		return t
	}
	loc, err := p.Location()
	if err != nil {
		return t
	}
	start, err1 := parseClock(p.QuietHours.Start)
	end, err2 := parseClock(p.QuietHours.End)
	if err1 != nil || err2 != nil || start == end {
		return t
	}
	local := t.In(loc)
	clock := time.Duration(local.Hour())*time.Hour + time.Duration(local.Minute())*time.Minute +
		time.Duration(local.Second())*time.Second + time.Duration(local.Nanosecond())
	// The window's end on the wall clock of that day, as Postgres's
	// date + time AT TIME ZONE reads it.
	at := func(days int, c time.Duration) time.Time {
		return time.Date(local.Year(), local.Month(), local.Day()+days,
			int(c/time.Hour), int(c%time.Hour/time.Minute), int(c%time.Minute/time.Second), 0, loc)
	}
	switch {
	case start < end:
		if clock >= start && clock < end {
			return at(0, end)
		}
	case clock >= start:
		return at(1, end)
	case clock < end:
		return at(0, end)
	}
	return t
}

// parseClock reads "HH:MM" (or "HH:MM:SS") as a duration since midnight.
func parseClock(s string) (time.Duration, error) {
	c, err := time.Parse("15:04", s)
	if err != nil {
		if c, err = time.Parse("15:04:05", s); err != nil {
			return 0, ErrInvalidClock
		}
	}
	return time.Duration(c.Hour())*time.Hour + time.Duration(c.Minute())*time.Minute +
		time.Duration(c.Second())*time.Second, nil
}

// ValidateUserID checks a user id as Herald stores it (a recipient, a
// token's owner): required, valid UTF-8, at most MaxRecipientLength bytes.
func ValidateUserID(userID string) error {
	return errors.Join(checkText("user_id", userID, true, MaxRecipientLength)...)
}
