package adapters_test

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// fcmBadRequest is FCM's 400 INVALID_ARGUMENT with the FcmError detail,
// then the details given (a google.rpc.BadRequest, or nothing).
func fcmBadRequest(message, details string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"code":400,"message":`+message+`,"status":"INVALID_ARGUMENT","details":[`+
			`{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"}`+details+`]}}`)
	}
}

// An INVALID_ARGUMENT is about the token only when FCM says so: its field
// violation names message.token, or its message is FCM's own for a token it
// does not know. A message FCM refused whose words merely mention
// registration tokens read as the token's fault, and the token, valid, was
// deleted: that device never got another push. The delivery fails, the
// token stays.
func TestAMessageRefusalThatMentionsRegistrationTokensKeepsTheToken(t *testing.T) {
	t.Parallel()
	for name, answer := range map[string]http.HandlerFunc{
		"a field violation on the data": fcmBadRequest(`"Invalid value at 'message.data': the registration token must not be sent as a data key."`,
			`,{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.data",`+
				`"description":"the registration token must not be sent as a data key"}]}`),
		"no field violation": fcmBadRequest(`"Message with a registration token target has an invalid android.ttl."`, ``),
		"a longer text around the token's": fcmBadRequest(
			`"Invalid APNs payload. The registration token is not a valid FCM registration token for a message with this payload."`, ``),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sender := senderAnsweredBy(t, answer)
			_, err := sender.Push(context.Background(), message("tok"))
			var se *notification.SendError
			require.ErrorAs(t, err, &se)
			assert.ErrorIs(t, err, notification.ErrMessageRejected, "the token would be deleted: %v", err)
			assert.NotErrorIs(t, err, notification.ErrTokenRejected)
			assert.Equal(t, "INVALID_ARGUMENT", se.Code)
		})
	}
}

// FCM's answers about a token it does not know still delete the token:
// with the field violation naming message.token, and as real FCM answers
// it, with its message alone.
func TestFCMsInvalidTokenAnswersDeleteTheToken(t *testing.T) {
	t.Parallel()
	for name, answer := range map[string]http.HandlerFunc{
		"the message alone": fcmBadRequest(`"The registration token is not a valid FCM registration token"`, ``),
		"with the field violation": fcmBadRequest(`"The registration token is not a valid FCM registration token"`,
			`,{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token",`+
				`"description":"Invalid registration token"}]}`),
		"the field violation alone": fcmBadRequest(`"Request contains an invalid argument."`,
			`,{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"message.token",`+
				`"description":"Invalid registration token"}]}`),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sender := senderAnsweredBy(t, answer)
			_, err := sender.Push(context.Background(), message("tok"))
			var se *notification.SendError
			require.ErrorAs(t, err, &se)
			assert.ErrorIs(t, err, notification.ErrTokenRejected)
			assert.Equal(t, "INVALID_ARGUMENT", se.Code)
		})
	}
}
