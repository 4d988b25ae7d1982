package herald_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func TestOneFCMServesOneHerald(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	fcm, err := herald.NewFCM(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	_, err = herald.New(pool, fcm, rules, fastConfig())
	require.NoError(t, err)
	// A second Herald on it would share, and fight over, one breaker.
	_, err = herald.New(pool, fcm, rules, fastConfig())
	require.Error(t, err)
}
