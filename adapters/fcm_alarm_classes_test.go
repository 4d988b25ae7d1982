package adapters_test

import (
	"context"
	"testing"

	"firebase.google.com/go/v4/messaging"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// The sender reacts differently to a token of another Firebase project
// (prune it) and to rejected APNs or web push credentials (pause that
// platform, retry later) than to our own configuration being refused (fail
// the delivery): each comes back as its own class, and all three still
// read as a configuration alarm.
func TestFCMConfigurationAlarmsAreToldApart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fault testutil.FaultCode
		class error
		code  string
	}{
		{testutil.FaultSenderIDMismatch, notification.ErrSenderMismatch, "SENDER_ID_MISMATCH"},
		{testutil.FaultThirdPartyAuth, notification.ErrPlatformAuthRejected, "THIRD_PARTY_AUTH_ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			t.Parallel()
			fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
			client, err := fake.MessagingClient(context.Background())
			require.NoError(t, err)
			fake.FailToken("tok", testutil.Fault{Code: tt.fault})
			_, err = client.Send(context.Background(), &messaging.Message{Token: "tok"})
			require.Error(t, err)
			se := adapters.ClassifyFCMError(err)
			assert.ErrorIs(t, se, tt.class)
			assert.ErrorIs(t, se, notification.ErrMisconfigured, "still a configuration alarm")
			assert.Equal(t, tt.code, se.Code)
			assert.False(t, se.CountsAgainstProvider, "one token or one platform says nothing about FCM")
			for _, other := range []error{notification.ErrSenderMismatch, notification.ErrPlatformAuthRejected} {
				if other != tt.class {
					assert.NotErrorIs(t, se, other)
				}
			}
		})
	}
}
