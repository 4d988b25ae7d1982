package demo

import (
	"context"
	"strings"
	"time"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/notification"
)

// everyday posts comments on a healthy FCM: committed ones, rolled-back
// ones, one on the author's own course, and one over the payload limit.
func (d *demo) everyday(ctx context.Context) error {
	d.out.section("comments")
	for _, p := range []struct{ by, course, body, rollback string }{
		{"bob", "go", "Great intro to contexts!", ""},
		{"carol", "pg", "The MVCC chapter is gold.", ""},
		{"dave", "k8s", "Could you add a section on operators?", ""},
		{"dave", "go", "CHEAP WATCHES click here", "the spam filter rejected the comment after Raise"},
		{"alice", "go", "Errata for chapter 2 are up.", ""},
	} {
		if _, err := d.post(ctx, p.by, p.course, p.body, p.rollback); err != nil {
			return err
		}
	}
	if err := d.postOversized(ctx, "bob", "spec", "dave", "pg"); err != nil {
		return err
	}
	if _, err := d.post(ctx, "carol", "go", "Is there a sequel?", "the course was archived meanwhile: comments are closed"); err != nil {
		return err
	}
	return d.settleAndReport(ctx)
}

// outage takes FCM down for a few seconds while comments keep coming: the
// breaker opens, sends stop, and once FCM is back everything goes out. With
// real FCM the comments come all the same, without the outage.
func (d *demo) outage(ctx context.Context) error {
	d.out.section("FCM outage")
	begin := time.Now()
	var requests int64
	if d.fake != nil {
		requests = d.fake.Requests()
		d.fake.FailAll(fakefcm.Fault{Code: fakefcm.FaultUnavailable})
		d.out.event("fault", "FCM down: every request answers 503 UNAVAILABLE (the SDK retries, then the %s send timeout ends it)",
			d.cfg.FCM.SendTimeout)
	} else {
		d.out.event("skip", "real FCM: an outage cannot be injected; the comments below go out as usual")
	}
	for _, p := range []struct{ by, course, body string }{
		{"bob", "go", "Does chapter 5 cover generics?"},
		{"carol", "pg", "Vacuum finally makes sense."},
		{"dave", "k8s", "Helm or Kustomize?"},
	} {
		if _, err := d.post(ctx, p.by, p.course, p.body, ""); err != nil {
			return err
		}
	}
	if !cli.Sleep(ctx, 500*time.Millisecond) {
		return ctx.Err()
	}
	if _, err := d.post(ctx, "dave", "pg", "first!!!", "the user pressed undo before the request finished"); err != nil {
		return err
	}
	if !cli.Sleep(ctx, 500*time.Millisecond) {
		return ctx.Err()
	}
	if _, err := d.post(ctx, "dave", "go", "Loved the testing chapter.", ""); err != nil {
		return err
	}
	if d.fake == nil {
		if _, err := d.post(ctx, "carol", "go", "Any plans for a video course?", ""); err != nil {
			return err
		}
		return d.settleAndReport(ctx)
	}

	// The breaker opens once enough pushes have failed in a row.
	deadline := begin.Add(4 * (d.cfg.FCM.SendTimeout + d.cfg.FCM.BreakerOpenFor))
	for d.breaker.opens() == 0 && time.Now().Before(deadline) {
		if err := d.heraldDied(); err != nil {
			return err
		}
		if !cli.Sleep(ctx, 10*time.Millisecond) {
			return ctx.Err()
		}
	}
	if d.breaker.opens() == 0 {
		d.out.event("breaker", "did not open within %s", time.Since(begin).Round(time.Millisecond))
	}
	c, err := d.post(ctx, "carol", "go", "Any plans for a video course?", "")
	if err != nil {
		return err
	}
	if d.breaker.opens() > 0 {
		d.out.more("committed while the breaker is open: %s waits in the database, no request is made for it", c.label)
	}
	if rest := demoOutage - time.Since(begin); rest > 0 && !cli.Sleep(ctx, rest) {
		return ctx.Err()
	}
	d.fake.ClearFaults()
	d.out.event("fault", "FCM back after %.1fs; it refused %d requests meanwhile (the SDK's own retries included)",
		time.Since(begin).Seconds(), d.fake.Requests()-requests)
	return d.settleAndReport(ctx)
}

// throttling makes FCM answer one push 429 QUOTA_EXCEEDED with Retry-After:
// the retry waits at least that long. With real FCM the comment goes out as
// usual.
func (d *demo) throttling(ctx context.Context) error {
	d.out.section("FCM throttling")
	tok := d.user("carol").tokens[0]
	if d.fake != nil {
		d.fake.FailToken(tok.token, fakefcm.Fault{Code: fakefcm.FaultQuotaExceeded, RetryAfter: demoQuotaRetry, Times: 1})
		d.out.event("fault", "%s: the next request answers 429 QUOTA_EXCEEDED with Retry-After: %d", tok.label, int(demoQuotaRetry.Seconds()))
	} else {
		d.out.event("skip", "real FCM: QUOTA_EXCEEDED cannot be injected; the comment below goes out as usual")
	}
	c, err := d.post(ctx, "bob", "k8s", "The networking chapter saved my weekend.", "")
	if err != nil {
		return err
	}
	if d.fake == nil || c.notification == nil {
		return d.settleAndReport(ctx)
	}
	// Catch the delivery between the 429 and its retry.
	var failed *notification.Delivery
	for deadline := time.Now().Add(10 * time.Second); failed == nil && time.Now().Before(deadline); {
		if err := d.heraldDied(); err != nil {
			return err
		}
		ds, err := d.h.ListDeliveries(ctx, c.notification.ID())
		if err != nil {
			return err
		}
		for _, del := range ds {
			if del.Token() != tok.token {
				continue
			}
			if del.Status() == notification.StatusRetryScheduled && del.ErrorCode() == "QUOTA_EXCEEDED" {
				failed = del
			}
			if del.Status().IsFinal() {
				deadline = time.Time{} // missed it: the outcome below still tells
			}
		}
		if failed == nil && !cli.Sleep(ctx, 10*time.Millisecond) {
			return ctx.Err()
		}
	}
	if failed != nil {
		d.quotaAt = failed.UpdatedAt()
		d.out.event("retry", "%s: 429 %s -> retry due %.2fs later (Retry-After %s); all sends pause meanwhile",
			tok.label, failed.ErrorCode(), failed.DueAt().Sub(failed.UpdatedAt()).Seconds(), demoQuotaRetry)
	}
	if err := d.settleAndReport(ctx); err != nil {
		return err
	}
	if failed == nil {
		return nil
	}
	for _, r := range d.fake.AcceptedFor(tok.token) {
		if r.Data["comment_id"] == c.id {
			gap := r.At.Sub(d.quotaAt)
			d.quotaGap = &gap
			verdict := "no sooner than Retry-After"
			if gap < demoQuotaRetry {
				verdict = "TOO EARLY: sooner than Retry-After"
			}
			d.out.more("accepted %.2fs after the 429: %s", gap.Seconds(), verdict)
		}
	}
	return nil
}

// showInbox prints the start of user's inbox and marks the newest read.
func (d *demo) showInbox(ctx context.Context, u *demoUser) error {
	d.out.section(u.name + "'s inbox")
	inbox := d.h.Inbox()
	unread, err := inbox.CountUnread(ctx, u.id)
	if err != nil {
		return err
	}
	const show = 4
	page, err := inbox.List(ctx, u.id, "", show)
	if err != nil {
		return err
	}
	more := ""
	if page.Next != "" {
		more = "; more on the next page"
	}
	d.out.printf("  %d unread, newest %d shown%s\n", unread, len(page.Notifications), more)
	for _, n := range page.Notifications {
		state := "unread"
		if n.IsRead() {
			state = "read"
		}
		content := n.Content()
		d.out.printf("    %-6s %s  %-36s %-32s (%s)\n", state, n.CreatedAt().Format("15:04:05"),
			content.Title, content.Body, strings.TrimPrefix(content.Data["comment_id"], d.ns))
	}
	if len(page.Notifications) == 0 {
		return nil
	}
	first := page.Notifications[0]
	if err := inbox.MarkRead(ctx, u.id, first.ID()); err != nil {
		return err
	}
	after, err := inbox.CountUnread(ctx, u.id)
	if err != nil {
		return err
	}
	d.out.printf("  MarkRead(%s) -> %d unread\n", demoShortID(first), after)
	return nil
}
