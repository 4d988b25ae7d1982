package notification_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// OrderShipped is a host application's own event type.
type OrderShipped struct {
	OrderID string `json:"order_id"`
	UserID  string `json:"user_id"`
}

func (OrderShipped) EventType() string { return "order_shipped" }

func rules(t *testing.T) *notification.Rules {
	t.Helper()
	r := notification.NewRules()
	require.NoError(t, notification.On(r, notification.NotifyCourseAuthor))
	require.NoError(t, notification.On(r, func(e OrderShipped) ([]notification.Draft, error) {
		return []notification.Draft{{Recipient: e.UserID, Type: "order_shipped",
			Content: notification.Content{Title: "Shipped", Body: "Order " + e.OrderID}}}, nil
	}))
	return r
}

func comment(commenter, author string) notification.CommentCreated {
	return notification.CommentCreated{CourseID: "c1", CourseTitle: "Go", CommentID: "m1",
		CommenterID: commenter, CommenterName: "Ann", CourseAuthorID: author}
}

func TestCommentCreatedNotifiesTheAuthor(t *testing.T) {
	t.Parallel()
	drafts, err := rules(t).Drafts(comment("ann", "bob"))
	require.NoError(t, err)
	require.Len(t, drafts, 1)
	assert.Equal(t, "bob", drafts[0].Recipient)
	assert.Equal(t, "c1", drafts[0].Data["course_id"])
	require.NoError(t, drafts[0].Validate())
}

func TestCommentOnOwnCourseNotifiesNobody(t *testing.T) {
	t.Parallel()
	drafts, err := rules(t).Drafts(comment("bob", "bob"))
	require.NoError(t, err)
	assert.Empty(t, drafts)
}

func TestHostEventTypes(t *testing.T) {
	t.Parallel()
	r := rules(t)
	assert.Equal(t, []string{"comment_created", "order_shipped"}, r.Types())
	drafts, err := r.Drafts(OrderShipped{OrderID: "o9", UserID: "u3"})
	require.NoError(t, err)
	assert.Equal(t, "Order o9", drafts[0].Body)

	err = notification.On(r, func(OrderShipped) ([]notification.Draft, error) { return nil, nil })
	require.ErrorIs(t, err, notification.ErrDuplicateRule)
}

type unregistered struct{}

func (unregistered) EventType() string { return "nobody_knows_me" }

func TestUnknownAndInvalidEvents(t *testing.T) {
	t.Parallel()
	r := rules(t)
	_, err := r.Drafts(unregistered{})
	require.ErrorIs(t, err, notification.ErrUnknownEvent)
	_, err = r.Drafts(notification.CommentCreated{})
	require.ErrorIs(t, err, notification.ErrRequired)
	_, err = r.Drafts(nil)
	require.ErrorIs(t, err, notification.ErrMalformedEvent)
}

func TestDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	r := rules(t)
	in := comment("ann", "bob")
	data, err := json.Marshal(in)
	require.NoError(t, err)
	out, err := r.Decode(notification.CommentCreatedType, data)
	require.NoError(t, err)
	assert.Equal(t, in, out)

	_, err = r.Decode("nobody_knows_me", data)
	require.ErrorIs(t, err, notification.ErrUnknownEvent)
	_, err = r.Decode(notification.CommentCreatedType, []byte(`{"course_id":`))
	require.ErrorIs(t, err, notification.ErrMalformedEvent)
	_, err = r.Decode(notification.CommentCreatedType, []byte(`{}`))
	require.ErrorIs(t, err, notification.ErrMalformedEvent, "decoded but invalid")
}
