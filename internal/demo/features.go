package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/notification"
)

// demoNotice is the host's second event: a notification it builds itself,
// with the draft's product options (idempotency key, send time, expiry,
// collapse key, platform options). Its pushes carry data "feature", so the
// comment accounting leaves them aside; the features step checks them.
type demoNotice struct {
	Draft notification.Draft `json:"draft"`
}

// EventType names the event in the outbox.
func (demoNotice) EventType() string { return "demo_notice" }

func notifyNotice(e demoNotice) ([]notification.Draft, error) {
	return []notification.Draft{e.Draft}, nil
}

// notice raises one notice in its own transaction.
func (d *demo) notice(ctx context.Context, feature string, draft notification.Draft) (*notification.Notification, error) {
	if draft.Data == nil {
		draft.Data = map[string]string{}
	}
	draft.Data["feature"] = feature
	var n *notification.Notification
	err := pgx.BeginFunc(ctx, d.env.Pool, func(tx pgx.Tx) error {
		ns, err := d.h.Raise(ctx, tx, demoNotice{Draft: draft})
		if err == nil && len(ns) == 1 {
			n = ns[0]
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raise %s notice: %w", feature, err)
	}
	return n, nil
}

// waitStatuses waits until n's deliveries are all final and returns their
// counts by status.
func (d *demo) waitFinal(ctx context.Context, n *notification.Notification) (map[notification.DeliveryStatus]int, error) {
	deadline := time.Now().Add(demoSettleWithin)
	for {
		ds, err := d.h.ListDeliveries(ctx, n.ID())
		if err != nil {
			return nil, err
		}
		counts := map[notification.DeliveryStatus]int{}
		final := len(ds) > 0
		for _, del := range ds {
			counts[del.Status()]++
			final = final && del.Status().IsFinal()
		}
		if final {
			return counts, nil
		}
		if time.Now().After(deadline) {
			return counts, &demoNotSettledError{within: demoSettleWithin, open: len(ds)}
		}
		if !cli.Sleep(ctx, 50*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// acceptedOf returns what the fake FCM accepted of feature's notices to
// token.
func (d *demo) acceptedOf(feature, token string) []fakefcm.Received {
	var out []fakefcm.Received
	for _, r := range d.fake.AcceptedFor(token) {
		if r.Data["feature"] == feature {
			out = append(out, r)
		}
	}
	return out
}

// features shows issue 10's product options, one scenario each: a
// double-submitted form, a reminder for later, a notice that expires in an
// outage, five likes that collapse into one push, and a rich iOS push whose
// badge is the unread count. A broken promise is returned as a problem.
func (d *demo) features(ctx context.Context) (problems []error, err error) {
	d.out.section("product options")
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Errorf(format, args...))
			d.out.more("PROBLEM: "+format, args...)
		}
	}
	alice, bob, carol := d.user("alice"), d.user("bob"), d.user("carol")

	// Idempotency: the enrolment form is submitted twice.
	enrol := notification.Draft{Recipient: alice.id, Type: "enrolled", IdempotencyKey: "enrol-bob-go",
		Content: notification.Content{Title: "Bob enrolled in Go in Practice"}}
	first, err := d.notice(ctx, "idempotency", enrol)
	if err != nil {
		return nil, err
	}
	again, err := d.notice(ctx, "idempotency", enrol)
	if err != nil {
		return nil, err
	}
	d.out.event("idempotent", "bob's enrolment form submitted twice (IdempotencyKey %q): Raise returned %s, then %s again",
		enrol.IdempotencyKey, demoShortID(first), demoShortID(again))
	check(first.ID() == again.ID(), "the second raise of one idempotency key made another notification")

	// SendAt: a reminder for later; neither push nor inbox before then.
	remind := notification.Draft{Recipient: carol.id, Type: "reminder", SendAt: time.Now().Add(2 * time.Second),
		Content: notification.Content{Title: "Your live session starts soon"}}
	reminder, err := d.notice(ctx, "scheduled", remind)
	if err != nil {
		return nil, err
	}
	page, err := d.h.Inbox().List(ctx, carol.id, "", 50)
	if err != nil {
		return nil, err
	}
	inInbox := false
	for _, n := range page.Notifications {
		inInbox = inInbox || n.ID() == reminder.ID()
	}
	d.out.event("scheduled", "reminder for carol with SendAt in 2s: held; in her inbox now: %v", inInbox)
	check(!inInbox, "a scheduled notification showed in the inbox before its time")

	// ExpiresAt: "live now" to alice while her devices cannot be reached.
	if d.fake != nil {
		for _, t := range alice.tokens {
			d.fake.FailToken(t.token, fakefcm.Fault{Code: fakefcm.FaultUnavailable})
		}
		d.out.event("fault", "alice's devices unreachable: FCM answers 503 for them")
	}
	live, err := d.notice(ctx, "expiry", notification.Draft{Recipient: alice.id, Type: "live",
		ExpiresAt: time.Now().Add(1500 * time.Millisecond), Content: notification.Content{Title: "Live Q&A starts now"}})
	if err != nil {
		return nil, err
	}
	d.out.event("expiring", "%s \"Live Q&A starts now\" to alice, ExpiresAt in 1.5s", demoShortID(live))

	// Collapse: five likes while bob's devices are unreachable.
	if d.fake != nil {
		for _, t := range bob.tokens {
			d.fake.FailToken(t.token, fakefcm.Fault{Code: fakefcm.FaultUnavailable})
		}
		d.out.event("fault", "bob's devices unreachable: FCM answers 503 for them")
	}
	var likes []*notification.Notification
	for i := range 5 {
		title := "Carol liked your course"
		if i > 0 {
			title = fmt.Sprintf("Carol and %d others liked your course", i)
		}
		n, err := d.notice(ctx, "collapse", notification.Draft{Recipient: bob.id, Type: "likes",
			CollapseKey: "likes-pg", Content: notification.Content{Title: title}})
		if err != nil {
			return nil, err
		}
		likes = append(likes, n)
	}
	d.out.event("collapse", "5 likes for bob with CollapseKey \"likes-pg\", the last: \"Carol and 4 others liked your course\"")
	if !cli.Sleep(ctx, 2*time.Second) {
		return nil, ctx.Err()
	}
	if d.fake != nil {
		for _, u := range []*demoUser{alice, bob} {
			for _, t := range u.tokens {
				if t.fault != nil && t.fault.Times == 0 {
					d.fake.FailToken(t.token, *t.fault) // a dead device stays dead
				} else {
					d.fake.FailToken(t.token, fakefcm.Fault{Code: fakefcm.FaultNone})
				}
			}
		}
		d.out.event("recover", "alice's and bob's devices reachable again")
	}

	counts, err := d.waitFinal(ctx, live)
	if err != nil {
		return nil, err
	}
	d.out.event("expired", "%s: %s", demoShortID(live), demoDescribeCounts(counts))
	if d.fake != nil {
		check(counts[notification.StatusExpired] > 0 && counts[notification.StatusSent] == 0,
			"the expired notice was pushed or not expired: %v", counts)
	}
	for i, n := range likes {
		counts, err := d.waitFinal(ctx, n)
		if err != nil {
			return nil, err
		}
		if i < 4 {
			check(counts[notification.StatusSent] == 0 || d.fake == nil, "like %d was pushed though superseded", i+1)
		} else {
			d.out.event("collapsed", "likes 1-4: superseded, never pushed; like 5: %s", demoDescribeCounts(counts))
		}
	}
	counts, err = d.waitFinal(ctx, reminder)
	if err != nil {
		return nil, err
	}
	d.out.event("scheduled", "reminder: %s", demoDescribeCounts(counts))

	// Rich: an iOS push with sound, thread, interruption level, and the
	// unread count as its badge.
	rich, err := d.notice(ctx, "rich", notification.Draft{Recipient: carol.id, Type: "reply",
		Content: notification.Content{Title: "Alice replied to your question"},
		APNs: &notification.APNsOptions{BadgeUnread: true, Sound: "default", ThreadID: "course-k8s",
			InterruptionLevel: notification.InterruptionTimeSensitive},
		Android: &notification.AndroidOptions{Priority: notification.AndroidPriorityHigh, ChannelID: "replies"}})
	if err != nil {
		return nil, err
	}
	if _, err := d.waitFinal(ctx, rich); err != nil {
		return nil, err
	}
	unread, err := d.h.Inbox().CountUnread(ctx, carol.id)
	if err != nil {
		return nil, err
	}
	if d.fake == nil {
		d.out.event("rich", "iOS push to carol with the unread count (%d) as its badge", unread)
		return problems, nil
	}

	for _, t := range alice.tokens {
		check(len(d.acceptedOf("idempotency", t.token)) <= 1, "%s got the enrolment twice", t.label)
	}
	d.out.more("the enrolment reached each of alice's live devices once")
	for _, t := range carol.tokens {
		for _, r := range d.acceptedOf("scheduled", t.token) {
			check(!r.At.Before(remind.SendAt), "the reminder reached %s before its time", t.label)
			d.out.more("the reminder reached %s %s after its SendAt", t.label, r.At.Sub(remind.SendAt).Round(time.Millisecond))
		}
		for _, r := range d.acceptedOf("rich", t.token) {
			d.out.event("rich", "%s received: badge %v (unread now %d), sound %v, thread-id %v, interruption-level %v",
				t.label, r.APNsAps["badge"], unread, r.APNsAps["sound"], r.APNsAps["thread-id"], r.APNsAps["interruption-level"])
		}
	}
	for _, t := range alice.tokens {
		check(len(d.acceptedOf("expiry", t.token)) == 0, "the expired notice reached %s", t.label)
	}
	for _, t := range bob.tokens {
		got := d.acceptedOf("collapse", t.token)
		if len(got) == 0 {
			continue // a device pruned earlier
		}
		check(len(got) == 1 && got[0].Title == "Carol and 4 others liked your course",
			"%s got %d like pushes", t.label, len(got))
		key := fmt.Sprintf("android collapse_key %q", got[0].CollapseKey)
		switch t.platform {
		case notification.PlatformWeb:
			key = fmt.Sprintf("web push Topic %q", got[0].WebpushHeaders["Topic"])
		case notification.PlatformIOS:
			key = fmt.Sprintf("apns-collapse-id %q", got[0].APNsHeaders["apns-collapse-id"])
		}
		d.out.more("%s: one push, %q, %s", t.label, got[0].Title, key)
	}
	return problems, nil
}
