package demo

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/notification"
)

// demoOverLimit is how many pushes over the per-device limit the
// preferences step sends one device at once.
const demoOverLimit = 5

// preferences shows issue 10's per-user promises: a muted type stays in
// the inbox but is never pushed, quiet hours in the user's time zone hold
// a push until they end while an urgent one goes at once, a device over
// FCM's per-device limit waits while the others go on, and forgetting a
// user leaves no row naming them. A broken promise is returned as a
// problem.
func (d *demo) preferences(ctx context.Context) (problems []error, err error) {
	d.out.section("preferences, per-device limits, forgetting a user")
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Errorf(format, args...))
			d.out.more("PROBLEM: "+format, args...)
		}
	}
	carol, bob := d.user("carol"), d.user("bob")

	// Mute: carol does not want marketing pushes.
	if err := d.h.Preferences().Set(ctx, carol.id, herald.Preferences{Muted: []string{"marketing"}}); err != nil {
		return nil, err
	}
	promo, err := d.notice(ctx, "muted", notification.Draft{Recipient: carol.id, Type: "marketing",
		Content: notification.Content{Title: "50% off all courses this week"}})
	if err != nil {
		return nil, err
	}
	counts, err := d.waitFinal(ctx, promo)
	if err != nil {
		return nil, err
	}
	unread, err := d.h.Inbox().CountUnread(ctx, carol.id)
	if err != nil {
		return nil, err
	}
	d.out.event("muted", "carol muted \"marketing\": the promotion is %s; in her inbox (%d unread)", demoDescribeCounts(counts), unread)
	check(counts[notification.StatusMuted] > 0 && counts[notification.StatusSent] == 0, "the muted promotion was pushed: %v", counts)

	// Quiet hours in Seoul, ending in 3 seconds by the database's clock
	// (which decides what is due); an urgent notice goes at once.
	var dbNow time.Time
	if err := d.env.Pool.QueryRow(ctx, `SELECT now()`).Scan(&dbNow); err != nil {
		return nil, err
	}
	seoul, err := time.LoadLocation("Asia/Seoul")
	if err != nil {
		return nil, err
	}
	end := dbNow.Add(3 * time.Second).Truncate(time.Second).In(seoul)
	quiet := herald.QuietHours{Start: dbNow.Add(-time.Hour).In(seoul).Format("15:04:05"), End: end.Format("15:04:05")}
	if err := d.h.Preferences().Set(ctx, bob.id, herald.Preferences{QuietHours: quiet, TimeZone: "Asia/Seoul"}); err != nil {
		return nil, err
	}
	digest, err := d.notice(ctx, "quiet", notification.Draft{Recipient: bob.id, Type: "digest",
		Content: notification.Content{Title: "Your weekly digest"}})
	if err != nil {
		return nil, err
	}
	alert, err := d.notice(ctx, "urgent", notification.Draft{Recipient: bob.id, Type: "security", Urgent: true,
		Content: notification.Content{Title: "New sign-in to your account"}})
	if err != nil {
		return nil, err
	}
	d.out.event("quiet", "bob's quiet hours in Asia/Seoul end at %s: a digest and an urgent security alert raised", end.Format("15:04:05"))
	if counts, err = d.waitFinal(ctx, alert); err != nil {
		return nil, err
	}
	d.out.event("urgent", "the alert, Urgent: %s at once", demoDescribeCounts(counts))
	if counts, err = d.waitFinal(ctx, digest); err != nil {
		return nil, err
	}
	d.out.event("quiet", "the digest: %s after the quiet hours", demoDescribeCounts(counts))
	if err := d.h.Preferences().Set(ctx, bob.id, herald.Preferences{}); err != nil {
		return nil, err
	}

	// Per-device limits: one device gets more pushes at once than FCM
	// allows it in a minute.
	limit := d.cfg.WithDefaults().Sender.DevicePerMinute
	erin := d.ns + "erin"
	erinPhone := d.ns + "erin-phone-fcm-token-0001"
	if err := d.h.Tokens().Register(ctx, erin, erinPhone, notification.PlatformAndroid); err != nil {
		return nil, err
	}
	if limit > 0 {
		for i := range limit + demoOverLimit {
			if _, err := d.notice(ctx, "device-limit", notification.Draft{Recipient: erin, Type: "quiz",
				Content: notification.Content{Title: fmt.Sprintf("Quiz answer %d graded", i+1)}}); err != nil {
				return nil, err
			}
		}
		waiting := 0
		deadline := time.Now().Add(demoSettleWithin)
		for time.Now().Before(deadline) {
			ds, err := d.h.ListDeliveriesByStatus(ctx, notification.StatusPending, 1000)
			if err != nil {
				return nil, err
			}
			waiting = 0
			for _, del := range ds {
				if del.Token() == erinPhone && del.ErrorCode() == "DEVICE_RATE" {
					waiting++
				}
			}
			if waiting == demoOverLimit && (d.fake == nil || len(d.acceptedOf("device-limit", erinPhone)) >= limit) {
				break
			}
			if !cli.Sleep(ctx, 100*time.Millisecond) {
				return nil, ctx.Err()
			}
		}
		d.out.event("limit", "%d pushes to erin's phone at once (limit %d a minute): %d wait for the next minute (DEVICE_RATE), none dropped",
			limit+demoOverLimit, limit, waiting)
		check(waiting == demoOverLimit, "%d of erin's pushes wait, want %d", waiting, demoOverLimit)
		if d.fake != nil {
			got := len(d.acceptedOf("device-limit", erinPhone))
			d.out.more("erin's phone received %d; the other users' pushes went on meanwhile", got)
			check(got <= limit, "erin's phone received %d pushes, over its limit %d", got, limit)
		}
	}

	// Forget erin: her waiting pushes, inbox, token and counts go.
	report, err := d.h.ForgetUser(ctx, erin)
	if err != nil {
		return nil, err
	}
	d.out.event("forget", "ForgetUser(erin): %d notifications, %d tokens, %d other deliveries, %d outbox rows erased",
		report.Notifications, report.Tokens, report.Deliveries, report.OutboxRows)
	var naming int
	if err := d.env.Pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM herald_notifications WHERE recipient = $1) +
		(SELECT count(*) FROM herald_device_tokens WHERE user_id = $1 OR token = $2) +
		(SELECT count(*) FROM herald_deliveries WHERE token = $2) +
		(SELECT count(*) FROM herald_device_counts WHERE device = hashtextextended($2, 0))`, erin, erinPhone).Scan(&naming); err != nil {
		return nil, err
	}
	d.out.more("rows naming erin or her phone afterwards: %d", naming)
	check(naming == 0, "%d rows still name erin or her phone", naming)
	return problems, nil
}
