package herald_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
)

func TestAHostImportsTokensThroughTheFacadeAndLearnsWhichEntryIsBad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())

	err := h.herald.Tokens().RegisterMany(ctx, []herald.TokenRegistration{
		{UserID: "ann", Token: "ann-phone", Platform: notification.PlatformAndroid},
		{UserID: "bob", Token: "bob phone", Platform: notification.PlatformIOS},
	})
	var regErr *herald.RegistrationError
	require.ErrorAs(t, err, &regErr)
	assert.Equal(t, 1, regErr.Index)
	assert.ErrorIs(t, err, notification.ErrInvalidToken)
	list, err := h.herald.Tokens().List(ctx, "ann")
	require.NoError(t, err)
	assert.Empty(t, list, "nothing of a refused import is written")

	require.NoError(t, h.herald.Tokens().RegisterMany(ctx, []herald.TokenRegistration{
		{UserID: "ann", Token: "ann-phone", Platform: notification.PlatformAndroid},
		{UserID: "bob", Token: "bob-phone", Platform: notification.PlatformIOS},
	}))
	list, err = h.herald.Tokens().List(ctx, "bob")
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "bob-phone", list[0].Token())
}
