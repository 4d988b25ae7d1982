package herald

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/adapters"
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

func (o consoleOperator) Overview(ctx context.Context) (console.Overview, error) {
	st, err := o.h.Status(ctx)
	if err != nil {
		return console.Overview{}, err
	}
	v := console.Overview{
		StatusKnown: true, DueNow: st.DueNow, DueNowAtLeast: st.DueNowAtLeast, OldestDue: st.OldestDueAge,
		DeadLetters: st.DeadLetters, RelayBacklog: st.Relay.Messages, RelayBacklogAtLeast: st.Relay.AtLeast,
		RelayLag: st.Relay.OldestAge, Breaker: st.Breaker, QuotaPause: st.QuotaPause,
	}
	v.Counts = consoleCounts(st.Deliveries)
	for _, c := range st.FailedLastHour {
		v.FailedLastHour = append(v.FailedLastHour, console.CodeCount{Code: c.Code, Count: c.Count})
	}
	for _, b := range st.Broadcasts {
		v.Broadcasts = append(v.Broadcasts, consoleBroadcast(b))
	}
	for _, in := range st.Instances {
		v.Instances = append(v.Instances, console.Instance{
			ID: in.ID, Host: in.Host, PID: in.PID, Version: in.Version,
			StartedAt: in.StartedAt, HeartbeatAt: in.HeartbeatAt, Leader: in.Leader,
		})
	}
	if o.h.fcm != nil {
		s := o.h.Stats()
		v.Process = []console.Figure{
			{Name: "pushes sent", Value: s.Sender.Sent},
			{Name: "failed", Value: s.Sender.Failed},
			{Name: "retries scheduled", Value: s.Sender.RetriesScheduled},
			{Name: "tokens pruned", Value: s.Sender.TokensPruned},
			{Name: "in flight", Value: s.Sender.InFlight},
			{Name: "in-flight limit", Value: s.Sender.InFlightLimit},
			{Name: "outbox messages relayed", Value: s.Relay.Messages},
			{Name: "deliveries created", Value: s.Relay.Deliveries},
			{Name: "dead-lettered", Value: s.Relay.DeadLetters},
		}
	}
	return v, nil
}

func (o consoleOperator) Deliveries(ctx context.Context, q console.Query) (console.Page, error) {
	page, err := o.h.QueryDeliveries(ctx, DeliveryQuery{
		Status: notification.DeliveryStatus(q.Status), Code: q.Code, Cursor: q.Cursor, Limit: q.Limit,
	})
	if errors.Is(err, ErrInvalidCursor) {
		return console.Page{}, fmt.Errorf("%w: %w", console.ErrInvalidQuery, err)
	}
	if err != nil {
		return console.Page{}, err
	}
	out := console.Page{Next: page.Next}
	for _, d := range page.Deliveries {
		out.Deliveries = append(out.Deliveries, consoleDelivery(d))
	}
	return out, nil
}

func (o consoleOperator) RetryFailed(ctx context.Context, ids []int64) (int, error) {
	return o.h.RetryFailed(ctx, ids)
}

func (o consoleOperator) RetryFailedWithCode(ctx context.Context, code string) (int, error) {
	return o.h.RetryFailedWhere(ctx, DeliveryQuery{Status: notification.StatusFailed, Code: code})
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
			CreatedAt: d.CreatedAt, ReplayedAt: d.ReplayedAt, PayloadBytes: d.PayloadBytes,
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
	if notification.ValidateUserID(userID) != nil {
		// Not a user id Herald stores (too long, not UTF-8): nobody has
		// devices, deliveries or notifications under it. Asked of the
		// database, it failed the page.
		return u, nil
	}
	// A user id may hold any number of tokens: the page lists the most
	// recently seen, as it does the deliveries and notifications.
	tokens, err := adapters.NewPostgresDeviceTokenRepository(o.h.pool).ListForUser(ctx, userID, limit+1)
	if err != nil {
		return u, err
	}
	if len(tokens) > limit {
		tokens, u.MoreDevices = tokens[:limit], true
	}
	for _, t := range tokens {
		u.Devices = append(u.Devices, console.Device{
			TokenHash: TokenHash(t.Token()), Platform: string(t.Platform()),
			RegisteredAt: t.RegisteredAt(), LastSeenAt: t.LastSeenAt(),
		})
	}
	deliveries, err := o.h.QueryDeliveries(ctx, DeliveryQuery{Recipient: userID, Limit: limit})
	if err != nil {
		return u, err
	}
	for _, d := range deliveries.Deliveries {
		u.Deliveries = append(u.Deliveries, consoleDelivery(d))
	}
	inbox, err := o.h.Inbox().List(ctx, userID, "", limit)
	if err != nil {
		return u, err
	}
	for _, n := range inbox.Notifications {
		c := console.Notification{
			ID: n.ID(), Recipient: n.Recipient(), Type: n.Type(), Broadcast: n.Broadcast() != nil,
			CreatedAt: n.CreatedAt(), ReadAt: n.ReadAt(),
		}
		if o.showContent {
			c.Title, c.Body = n.Content().Title, n.Content().Body
		}
		u.Notifications = append(u.Notifications, c)
	}
	return u, nil
}

func (o consoleOperator) Timeline(ctx context.Context, id uuid.UUID) (console.Timeline, error) {
	tl, err := o.h.Timeline(ctx, id)
	if errors.Is(err, notification.ErrNotFound) {
		return console.Timeline{}, fmt.Errorf("%w: %w", console.ErrNotFound, err)
	}
	if err != nil {
		return console.Timeline{}, err
	}
	n := tl.Notification
	out := console.Timeline{
		Notification: console.Notification{
			ID: n.ID, Recipient: n.Recipient, Type: n.Type, Broadcast: n.Broadcast,
			CreatedAt: n.CreatedAt, CancelledAt: n.CancelledAt,
		},
		Truncated: tl.Truncated,
	}
	if o.showContent {
		out.Notification.Title, out.Notification.Body = n.Title, n.Body
	}
	for _, s := range notification.Statuses {
		if c, ok := tl.Counts[s]; ok && c > 0 {
			out.Counts = append(out.Counts, console.StatusCount{Status: string(s), Count: int64(c)})
		}
	}
	for _, d := range tl.Deliveries {
		cd := consoleDelivery(d.DeliveryInfo)
		for _, a := range d.Attempts {
			cd.History = append(cd.History, console.Attempt{At: a.At, Outcome: string(a.Outcome), Code: a.Code, Error: a.Error})
		}
		out.Deliveries = append(out.Deliveries, cd)
	}
	if tl.Broadcast != nil {
		b := consoleBroadcast(*tl.Broadcast)
		out.Broadcast = &b
	}
	return out, nil
}

func (o consoleOperator) CancelNotification(ctx context.Context, id uuid.UUID) (int, error) {
	n, err := o.h.CancelNotification(ctx, id)
	if errors.Is(err, notification.ErrNotFound) {
		return n, fmt.Errorf("%w: %w", console.ErrNotFound, err)
	}
	return n, err
}

// consoleDelivery converts a delivery for the console; its token is a
// hash already.
func consoleDelivery(d DeliveryInfo) console.Delivery {
	return console.Delivery{
		ID: d.ID, NotificationID: d.NotificationID, Recipient: d.Recipient, Type: d.Type, TokenHash: d.TokenHash,
		Status: string(d.Status), Attempts: d.Attempts, Code: d.Code, LastError: d.LastError,
		DueAt: d.DueAt, UpdatedAt: d.UpdatedAt,
	}
}

func consoleCounts(cs []StatusCount) []console.StatusCount {
	out := make([]console.StatusCount, len(cs))
	for i, c := range cs {
		out[i] = console.StatusCount{Status: string(c.Status), Count: c.Count, AtLeast: c.AtLeast, Estimated: c.Estimated}
	}
	return out
}

func consoleBroadcast(b BroadcastProgress) console.Broadcast {
	return console.Broadcast{NotificationID: b.NotificationID, Type: b.Type, Expanded: b.Expanded,
		Refused: b.Refused, Refusal: b.Refusal, HeldUntil: b.HeldUntil, Holds: b.Holds, HeldReason: b.HeldReason,
		Tokens: b.Tokens, StartedAt: b.StartedAt}
}
