package adapters_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// An FCM, or a proxy in front of it, answering an error whose message is
// tens of kilobytes (a JSON error quoting a whole page, an HTML page on one
// line): the push's error is what the sender logs (its alarms quote it) and
// stores, and a log line of 64 KiB is one a log shipper drops, alarm and all.
// The error keeps its class and code and the start of FCM's words, within
// a bound.
func TestAnFCMErrorPageNeverMakesAPushErrorLongerThanItsBound(t *testing.T) {
	t.Parallel()
	page := strings.Repeat("<div>proxy says no</div>", 60<<10/24)
	googleError := func(status int, state, fcmCode string) string {
		details := ""
		if fcmCode != "" {
			details = `,"details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"` + fcmCode + `"}]`
		}
		return fmt.Sprintf(`{"error":{"code":%d,"message":%q,"status":%q%s}}`, status, page, state, details)
	}
	tests := []struct {
		name   string
		status int
		body   string
		class  error
	}{
		{"apns credentials refused", http.StatusUnauthorized, googleError(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"), notification.ErrPlatformAuthRejected},
		{"our credentials refused", http.StatusUnauthorized, googleError(401, "UNAUTHENTICATED", ""), notification.ErrCredentialsRejected},
		{"a proxy's 405", http.StatusMethodNotAllowed, googleError(405, "FAILED_PRECONDITION", ""), notification.ErrCredentialsRejected},
		{"a proxy's html page", http.StatusMethodNotAllowed, "<html>" + page + "</html>", notification.ErrCredentialsRejected},
		{"a message refused", http.StatusBadRequest, googleError(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"), notification.ErrMessageRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sender := senderAnsweredBy(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			})
			_, err := sender.Push(context.Background(), message("tok"))
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.class)
			var se *notification.SendError
			require.ErrorAs(t, err, &se)
			assert.LessOrEqual(t, len(se.Reason), adapters.MaxPushReasonLength, "the reason the sender logs")
			assert.LessOrEqual(t, len(err.Error()), adapters.MaxPushReasonLength+100, "the error: %.200s...", err.Error())
		})
	}
}
