package adapters_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/api/option"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// The firebase SDK checks a message before sending it and refuses some
// options Herald's decoding lets through (a row written around Herald, or
// options an older SDK took): no request is made. That refusal is the
// message's, like FCM's INVALID_ARGUMENT about it: the push fails for good,
// and FCM, never asked, is not taken for unavailable. Before, it was
// retried on the ladder as a network failure until its attempts ran out.
func TestAMessageTheSDKRefusesToSendIsRejectedNotRetried(t *testing.T) {
	t.Parallel()
	for name, msg := range map[string]notification.Message{
		"an android priority FCM does not have": withOptions(message("tok"), func(m *notification.Message) {
			m.Platform = notification.PlatformAndroid
			m.Android = &notification.AndroidOptions{Priority: "urgent"}
		}),
		"an image that is not a URL": withOptions(message("tok"), func(m *notification.Message) {
			m.Platform = notification.PlatformAndroid
			m.Android = &notification.AndroidOptions{ImageURL: "not a url"}
		}),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fake, sender := newSender(t, adapters.FCMSenderConfig{BreakerFailures: 1})
			_, err := sender.Push(context.Background(), msg)
			var se *notification.SendError
			require.ErrorAs(t, err, &se)
			assert.ErrorIs(t, err, notification.ErrMessageRejected, "%v", err)
			assert.Equal(t, "SDK_REJECTED", se.Code)
			assert.Contains(t, se.Reason, "refused by the firebase sdk before sending")
			assert.False(t, se.CountsAgainstProvider, "FCM was never asked")
			assert.True(t, se.NoRequest, "no round trip to learn from")
			assert.Zero(t, fake.Requests(), "no request was made")
			assert.Equal(t, "closed", sender.BreakerState())

			// The next push goes out as ever.
			_, err = sender.Push(context.Background(), message("other"))
			assert.NoError(t, err)
		})
	}
}

// An endpoint the HTTP client cannot even address fails every push before
// a request, as a refused message does; it is not the message's fault,
// and no delivery may fail for good for it.
func TestAnEndpointNoRequestCanBeMadeToRejectsNoMessage(t *testing.T) {
	t.Parallel()
	client, err := adapters.NewFCMClient(context.Background(), "p",
		option.WithEndpoint("https://127.0.0.1:1/v1\x01"), option.WithoutAuthentication())
	require.NoError(t, err)
	sender, err := adapters.NewFCMSender(client, adapters.FCMSenderConfig{})
	require.NoError(t, err)
	_, err = sender.Push(context.Background(), message("tok"))
	require.Error(t, err)
	assert.NotErrorIs(t, err, notification.ErrMessageRejected, "%v", err)
}

func withOptions(m notification.Message, set func(*notification.Message)) notification.Message {
	set(&m)
	return m
}
