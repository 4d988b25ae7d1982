package herald

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/internal/console"
	"github.com/herald-push/herald/notification"
)

// ConsoleOptions configures the operator console (Herald.Console).
type ConsoleOptions struct {
	// Title names the deployment in the console's pages. Defaults to
	// "Herald".
	Title string
	// ShowContent shows notifications' titles and bodies and dead
	// letters' payloads. Defaults to false: the console then shows who was
	// notified, of what type, when and with what outcome, never what was
	// said.
	ShowContent bool
	// Refresh is how often the overview reloads itself. Defaults to 10s;
	// negative means never.
	Refresh time.Duration
	// CSRFKey signs the console's anti-forgery tokens, at least 16 bytes.
	// Defaults to a random key made by Console, which suits one process;
	// give every instance behind one load balancer the same secret key
	// so that a form rendered by one is accepted by another.
	CSRFKey []byte
}

// Console returns the operator console, an http.Handler to mount behind
// the host's own authentication: it has none of its own, and whoever
// reaches it may retry, replay and cancel. Mount it under a path ending
// in "/" with that prefix stripped:
//
//	mux.Handle("/admin/herald/", requireAdmin(http.StripPrefix("/admin/herald", h.Console(herald.ConsoleOptions{}))))
//
// Its pages (server-rendered, usable without JavaScript, nothing loaded
// from the network) show the overview, failed deliveries with retry, dead
// letters with replay, a user's devices and notifications, and a
// notification's timeline with cancel. Every change is a POST from a
// confirmation page, refused without the anti-forgery token bound to the
// browser's cookie and from another origin. Device tokens are shown only
// as TokenHash; content only with ShowContent. It panics if CSRFKey is
// given and shorter than 16 bytes.
func (h *Herald) Console(opts ConsoleOptions) http.Handler {
	return console.New(consoleOperator{h: h, showContent: opts.ShowContent}, console.Options{
		Title: opts.Title, Refresh: opts.Refresh, Key: opts.CSRFKey, Logger: h.log,
	})
}

// consoleOperator is Herald as the console's Operator: the operator
// methods, with tokens hashed and content dropped unless shown.
type consoleOperator struct {
	h           *Herald
	showContent bool
}

// consoleDeadLetterCap bounds the dead letters the overview counts.
const consoleDeadLetterCap = 10_000

func (o consoleOperator) Overview(ctx context.Context) (console.Overview, error) {
	var v console.Overview
	counts, err := o.h.CountDeliveries(ctx)
	if err != nil {
		return v, err
	}
	for _, s := range notification.Statuses {
		v.Counts = append(v.Counts, console.StatusCount{Status: string(s), Count: counts[s]})
	}
	dls, err := o.h.DeadLetters(ctx, true, consoleDeadLetterCap)
	if err != nil {
		return v, err
	}
	v.DeadLetters = len(dls)
	if o.h.fcm != nil {
		st := o.h.Stats()
		v.Breaker = st.Breaker
		v.Process = []console.Figure{
			{Name: "pushes sent", Value: st.Sender.Sent},
			{Name: "failed", Value: st.Sender.Failed},
			{Name: "retries scheduled", Value: st.Sender.RetriesScheduled},
			{Name: "tokens pruned", Value: st.Sender.TokensPruned},
			{Name: "in flight", Value: st.Sender.InFlight},
			{Name: "outbox messages relayed", Value: st.Relay.Messages},
			{Name: "deliveries created", Value: st.Relay.Deliveries},
			{Name: "dead-lettered", Value: st.Relay.DeadLetters},
		}
	}
	return v, nil
}

func (o consoleOperator) Failed(ctx context.Context, limit int) ([]console.Delivery, error) {
	ds, err := o.h.ListFailed(ctx, limit)
	return consoleDeliveries(ds), err
}

func (o consoleOperator) RetryFailed(ctx context.Context, ids []int64) (int, error) {
	return o.h.RetryFailed(ctx, ids)
}

func (o consoleOperator) RetryAllFailed(ctx context.Context) (int, error) {
	return o.h.RetryAllFailed(ctx)
}

func (o consoleOperator) DeadLetters(ctx context.Context, pendingOnly bool, limit int) ([]console.DeadLetter, error) {
	dls, err := o.h.DeadLetters(ctx, pendingOnly, limit)
	if err != nil {
		return nil, err
	}
	out := make([]console.DeadLetter, len(dls))
	for i, d := range dls {
		out[i] = console.DeadLetter{
			ID: d.ID, Topic: d.Topic, MessageUUID: d.MessageUUID, Reason: d.Reason,
			CreatedAt: d.CreatedAt, ReplayedAt: d.ReplayedAt,
		}
		if o.showContent {
			out[i].Payload = string(d.Payload)
		}
	}
	return out, nil
}

func (o consoleOperator) ReplayDeadLetters(ctx context.Context, ids []int64) (int, error) {
	return o.h.ReplayDeadLetters(ctx, ids)
}

func (o consoleOperator) User(ctx context.Context, userID string, limit int) (console.User, error) {
	u := console.User{ID: userID}
	tokens, err := o.h.Tokens().List(ctx, userID)
	if err != nil {
		return u, err
	}
	for _, t := range tokens {
		u.Devices = append(u.Devices, console.Device{
			TokenHash: TokenHash(t.Token()), Platform: string(t.Platform()),
			RegisteredAt: t.RegisteredAt(), LastSeenAt: t.LastSeenAt(),
		})
	}
	page, err := o.h.Inbox().List(ctx, userID, "", limit)
	if err != nil {
		return u, err
	}
	for _, n := range page.Notifications {
		u.Notifications = append(u.Notifications, o.notification(n))
	}
	return u, nil
}

func (o consoleOperator) notification(n *notification.Notification) console.Notification {
	c := console.Notification{
		ID: n.ID(), Recipient: n.Recipient(), Type: n.Type(), Broadcast: n.Broadcast() != nil,
		CreatedAt: n.CreatedAt(), ReadAt: n.ReadAt(),
	}
	if o.showContent {
		c.Title, c.Body = n.Content().Title, n.Content().Body
	}
	return c
}

func (o consoleOperator) Timeline(ctx context.Context, id uuid.UUID) (console.Timeline, error) {
	ds, err := o.h.ListDeliveries(ctx, id)
	if err != nil {
		return console.Timeline{}, err
	}
	if len(ds) == 0 {
		return console.Timeline{}, console.ErrNotFound
	}
	return console.Timeline{Notification: console.Notification{ID: id}, Deliveries: consoleDeliveries(ds)}, nil
}

func (o consoleOperator) CancelNotification(context.Context, uuid.UUID) (int, error) {
	return 0, errors.New("cancelling a notification is not available yet")
}

// consoleDeliveries converts deliveries for the console, tokens hashed.
func consoleDeliveries(ds []*notification.Delivery) []console.Delivery {
	out := make([]console.Delivery, len(ds))
	for i, d := range ds {
		out[i] = console.Delivery{
			ID: d.ID(), NotificationID: d.NotificationID(), TokenHash: TokenHash(d.Token()),
			Status: string(d.Status()), Attempts: d.Attempts(), Code: d.ErrorCode(), LastError: d.LastError(),
			DueAt: d.DueAt(), UpdatedAt: d.UpdatedAt(),
		}
	}
	return out
}
