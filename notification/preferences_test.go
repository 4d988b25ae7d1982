package notification_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

func TestPreferencesValidateReportsEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	err := notification.Preferences{
		Muted:      []string{"", "ok"},
		QuietHours: notification.QuietHours{Start: "25:00", End: "7am"},
		TimeZone:   "Nowhere/Atlantis",
	}.Validate()
	require.Error(t, err)
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *notification.FieldError
		require.True(t, errors.As(e, &fe))
		fields = append(fields, fe.Field)
	}
	assert.Equal(t, []string{"muted", "quiet_hours.start", "quiet_hours.end", "time_zone"}, fields)
	assert.ErrorIs(t, err, notification.ErrInvalidTimeZone)
	assert.ErrorIs(t, err, notification.ErrInvalidClock)
	assert.NoError(t, notification.Preferences{}.Validate(), "no preferences at all is valid")
	assert.NoError(t, notification.Preferences{QuietHours: notification.QuietHours{Start: "22:00", End: "07:00:30"},
		TimeZone: "Asia/Seoul"}.Validate())
}

func TestPushAtHoldsOnlyWhatFallsInTheQuietHours(t *testing.T) {
	t.Parallel()
	seoul, err := time.LoadLocation("Asia/Seoul")
	require.NoError(t, err)
	night := notification.Preferences{QuietHours: notification.QuietHours{Start: "22:00", End: "07:00"}, TimeZone: "Asia/Seoul"}
	lunch := notification.Preferences{QuietHours: notification.QuietHours{Start: "12:00", End: "13:30"}, TimeZone: "Asia/Seoul"}
	at := func(day, h, m int) time.Time { return time.Date(2026, 12, day, h, m, 0, 0, seoul) }
	tests := []struct {
		name string
		p    notification.Preferences
		t    time.Time
		want time.Time
	}{
		{"before the night: at once", night, at(1, 21, 59), at(1, 21, 59)},
		{"the window's start is inside it", night, at(1, 22, 0), at(2, 7, 0)},
		{"after midnight: the same morning", night, at(2, 3, 0), at(2, 7, 0)},
		{"the window's end is outside it", night, at(2, 7, 0), at(2, 7, 0)},
		{"a daytime window", lunch, at(1, 12, 45), at(1, 13, 30)},
		{"after a daytime window", lunch, at(1, 13, 30), at(1, 13, 30)},
		{"no quiet hours", notification.Preferences{TimeZone: "Asia/Seoul"}, at(1, 23, 0), at(1, 23, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.True(t, tt.p.PushAt(tt.t, false).Equal(tt.want), "got %s", tt.p.PushAt(tt.t, false).In(seoul))
			assert.True(t, tt.p.PushAt(tt.t, true).Equal(tt.t), "an urgent push goes at once")
		})
	}
	assert.True(t, night.IsMuted("") == false && notification.Preferences{Muted: []string{"ads"}}.IsMuted("ads"))
}

// A host that passes a user's list straight through (100,000 empty types)
// gets one refusal of bounded size, not a FieldError per entry: the error
// is logged and shown, and one such request made it megabytes.
func TestAHundredThousandMutedTypesAreRefusedWithAnErrorOfBoundedSize(t *testing.T) {
	t.Parallel()
	err := notification.Preferences{Muted: make([]string, 100_000)}.Validate()
	assert.ErrorIs(t, err, notification.ErrTooLong)
	assert.ErrorIs(t, err, notification.ErrRequired)
	assert.Less(t, len(err.Error()), 10_000, "the error's size")
}

// "Local" and "localtime" (a file in Debian's zone database, a link to
// /etc/localtime) name the server's own zone, not the user's: Go reads the
// application server's, Postgres the database server's, and the two may
// differ.
func TestATimeZoneThatMeansTheServersOwnIsRefused(t *testing.T) {
	t.Parallel()
	for _, zone := range []string{"Local", "localtime"} {
		assert.ErrorIs(t, notification.Preferences{TimeZone: zone}.Validate(), notification.ErrInvalidTimeZone, zone)
	}
}
