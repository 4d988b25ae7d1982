package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func TestAnAbsurdRetryAfterParksADeliveryForADayAtMost(t *testing.T) {
	t.Parallel()
	fake, sender := newSender(t, adapters.FCMSenderConfig{})
	fake.FailToken("tok", testutil.Fault{Code: testutil.FaultQuotaExceeded, RetryAfter: 1000 * 24 * time.Hour})
	_, err := sender.Push(context.Background(), message("tok"))
	var se *notification.SendError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 24*time.Hour, se.RetryAfter)
}
