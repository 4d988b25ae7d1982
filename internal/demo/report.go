package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/notification"
)

// demoConsole prints the demo's story on stdout, one line per step, with
// the time since the start. Lines from the breaker watch interleave safely.
type demoConsole struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newDemoConsole(w io.Writer) *demoConsole { return &demoConsole{w: w, start: time.Now()} }

// restartClock makes the timestamps count from now.
func (c *demoConsole) restartClock() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.start = time.Now()
}

func (c *demoConsole) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, format, args...)
}

// event prints a timestamped step under a tag.
func (c *demoConsole) event(tag, format string, args ...any) {
	c.printf("%6.2fs  %-10s %s\n", time.Since(c.start).Seconds(), "["+tag+"]", fmt.Sprintf(format, args...))
}

// more continues the previous event.
func (c *demoConsole) more(format string, args ...any) {
	c.printf("%20s%s\n", "", fmt.Sprintf(format, args...))
}

func (c *demoConsole) section(title string) { c.printf("\n%s\n", title) }

// demoBreakerWatch polls the circuit breaker's state and prints its
// transitions as they happen.
type demoBreakerWatch struct {
	opened atomic.Int64
	cancel context.CancelFunc
	done   chan struct{}
}

func watchDemoBreaker(ctx context.Context, h *herald.Herald, out *demoConsole) *demoBreakerWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &demoBreakerWatch{cancel: cancel, done: make(chan struct{})}
	explain := map[string]string{
		"open":      "pushes are refused without a request",
		"half-open": "letting a few probe requests through",
		"closed":    "FCM answers again",
	}
	go func() {
		defer close(w.done)
		state := h.Stats().Breaker
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := h.Stats().Breaker
			if now == state {
				continue
			}
			if now == "open" {
				w.opened.Add(1)
			}
			out.event("breaker", "%s -> %s: %s", state, now, explain[now])
			state = now
		}
	}()
	return w
}

func (w *demoBreakerWatch) opens() int64 { return w.opened.Load() }

func (w *demoBreakerWatch) stop() {
	w.cancel()
	<-w.done
}

// demoNotSettledError reports deliveries still open when a wait ended.
type demoNotSettledError struct {
	within time.Duration
	open   int
	bare   int // notifications without any delivery yet
}

func (e *demoNotSettledError) Error() string {
	return fmt.Sprintf("after %s, %d deliveries still open and %d notifications not expanded", e.within, e.open, e.bare)
}

// settle waits until every notification of a committed comment has been
// expanded into deliveries and every delivery is final, polling
// CountByStatus on a database of our own (on a shared one, only this run's
// deliveries count). It returns the deliveries by comment.
func (d *demo) settle(ctx context.Context, within time.Duration) (map[*demoComment][]*notification.Delivery, error) {
	deadline := time.Now().Add(within)
	for {
		if err := d.heraldDied(); err != nil {
			return nil, err
		}
		byComment, open, bare, err := d.deliveries(ctx)
		if err != nil {
			return nil, err
		}
		if open == 0 && d.env.Cluster != nil {
			counts, err := d.h.CountDeliveries(ctx)
			if err != nil {
				return nil, err
			}
			open = demoOpenCount(counts)
		}
		if open == 0 && bare == 0 {
			return byComment, nil
		}
		if time.Now().After(deadline) {
			return byComment, &demoNotSettledError{within: within, open: open, bare: bare}
		}
		if !cli.Sleep(ctx, 50*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// deliveries lists the deliveries of every committed notification, and
// counts the open ones and the notifications not yet expanded.
func (d *demo) deliveries(ctx context.Context) (map[*demoComment][]*notification.Delivery, int, int, error) {
	byComment := map[*demoComment][]*notification.Delivery{}
	open, bare := 0, 0
	events := 0
	for _, c := range d.comments {
		if c.outcome != demoNotified {
			continue
		}
		events++
		ds, err := d.h.ListDeliveries(ctx, c.notification.ID())
		if err != nil {
			return nil, 0, 0, err
		}
		byComment[c] = ds
		if len(ds) == 0 {
			bare++
		}
		for _, del := range ds {
			if !del.Status().IsFinal() {
				open++
			}
		}
	}
	// With real FCM every invented token is pruned, so later notifications
	// may expand to no delivery at all: then the relay's count says whether
	// it has seen their events.
	if bare > 0 && d.fake == nil && d.h.Stats().Relay.Events >= int64(events) {
		bare = 0
	}
	return byComment, open, bare, nil
}

// deliveryCounts counts deliveries by status: all of them on a database of
// our own, this run's on a shared one.
func (d *demo) deliveryCounts(ctx context.Context) (map[notification.DeliveryStatus]int, error) {
	if d.env.Cluster != nil {
		return d.h.CountDeliveries(ctx)
	}
	byComment, _, _, err := d.deliveries(ctx)
	if err != nil {
		return nil, err
	}
	counts := map[notification.DeliveryStatus]int{}
	for _, ds := range byComment {
		for _, del := range ds {
			counts[del.Status()]++
		}
	}
	return counts, nil
}

// demoDescribeCounts lists delivery counts, final statuses first.
func demoDescribeCounts(counts map[notification.DeliveryStatus]int) string {
	var parts []string
	for _, st := range []notification.DeliveryStatus{notification.StatusSent, notification.StatusTokenPruned,
		notification.StatusFailed, notification.StatusPending, notification.StatusClaimed, notification.StatusRetryScheduled} {
		parts = append(parts, fmt.Sprintf("%s %d", st, counts[st]))
	}
	// The product options' final statuses, when there are any.
	for _, st := range []notification.DeliveryStatus{notification.StatusExpired, notification.StatusSuperseded,
		notification.StatusMuted, notification.StatusCancelled, notification.StatusTokenMoved} {
		if counts[st] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, counts[st]))
		}
	}
	return strings.Join(parts, ", ")
}

func demoOpenCount(counts map[notification.DeliveryStatus]int) int {
	open := 0
	for status, n := range counts {
		if !status.IsFinal() {
			open += n
		}
	}
	return open
}

// settleAndReport waits for the deliveries so far and prints those of the
// comments not reported yet.
func (d *demo) settleAndReport(ctx context.Context) error {
	byComment, err := d.settle(ctx, demoSettleWithin)
	if byComment != nil {
		d.report(byComment)
	}
	return err
}

func (d *demo) report(byComment map[*demoComment][]*notification.Delivery) {
	for _, c := range d.comments {
		ds, ok := byComment[c]
		if !ok || c.reported {
			continue
		}
		final := len(ds) > 0
		parts := make([]string, 0, len(ds))
		for _, del := range ds {
			final = final && del.Status().IsFinal()
			parts = append(parts, d.label(del.Token())+" "+demoDescribeDelivery(del))
		}
		if !final {
			continue
		}
		c.reported = true
		d.out.event("deliver", "%s -> %s: %s", c.label, c.course.author.name, strings.Join(parts, ", "))
	}
}

func demoDescribeDelivery(del *notification.Delivery) string {
	switch del.Status() {
	case notification.StatusSent:
		if del.Attempts() > 1 {
			return fmt.Sprintf("sent on attempt %d", del.Attempts())
		}
		return "sent"
	case notification.StatusTokenPruned:
		return "token pruned (" + del.ErrorCode() + ")"
	case notification.StatusFailed:
		return fmt.Sprintf("FAILED after %d attempts (%s)", del.Attempts(), del.LastError())
	default:
		return string(del.Status())
	}
}

func (d *demo) label(token string) string {
	if l, ok := d.labels[token]; ok {
		return l
	}
	return "token …" + token[max(0, len(token)-6):]
}

// demoSummary is the run's accounting.
type demoSummary struct {
	committed, notified, ownCourse, tooLarge, rolledBack int
	notifications, rolledBackNotifications               int
	rolledBackRows                                       int
	deliveries                                           map[notification.DeliveryStatus]int
	fake                                                 bool
	accepted, expected, duplicates, lost, unexpected     int
	rolledBackPushes                                     int
	pruned                                               []string
	breakerOpens                                         int64
	breakerState                                         string
	stats                                                herald.Stats
	quotaGap                                             *time.Duration
}

// account reconciles what the host committed with what Herald stored and
// what FCM accepted: every notification of a committed comment must reach
// each device its recipient had (and still has) exactly once; a rolled-back
// comment must leave no notification, no row and no push.
func (d *demo) account(ctx context.Context) (*demoSummary, error) {
	s := &demoSummary{fake: d.fake != nil, breakerOpens: d.breaker.opens(), stats: d.h.Stats(), quotaGap: d.quotaGap}
	s.breakerState = s.stats.Breaker
	var notifiedIDs, rolledBackIDs []string
	rolledBack := map[string]bool{}
	for _, c := range d.comments {
		switch c.outcome {
		case demoNotified:
			s.notified++
			notifiedIDs = append(notifiedIDs, c.id)
		case demoOwnCourse:
			s.ownCourse++
		case demoTooLarge:
			s.tooLarge++
		case demoRolledBack:
			s.rolledBack++
			rolledBackIDs = append(rolledBackIDs, c.id)
			rolledBack[c.id] = true
		}
	}
	s.committed = s.notified + s.ownCourse + s.tooLarge

	pool := d.env.Pool
	countBy := `SELECT count(*) FROM herald_notifications WHERE data->>'comment_id' = ANY($1)`
	if err := pool.QueryRow(ctx, countBy, notifiedIDs).Scan(&s.notifications); err != nil {
		return nil, fmt.Errorf("count notifications: %w", err)
	}
	if err := pool.QueryRow(ctx, countBy, rolledBackIDs).Scan(&s.rolledBackNotifications); err != nil {
		return nil, fmt.Errorf("count notifications: %w", err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM demo_comments WHERE id = ANY($1)`, rolledBackIDs).Scan(&s.rolledBackRows); err != nil {
		return nil, fmt.Errorf("count comments: %w", err)
	}

	var err error
	if s.deliveries, err = d.deliveryCounts(ctx); err != nil {
		return nil, err
	}

	// The tokens that are gone now were pruned: nothing is owed to them.
	live := map[string]bool{}
	for _, u := range d.users {
		ts, err := d.h.Tokens().List(ctx, u.id)
		if err != nil {
			return nil, err
		}
		for _, t := range ts {
			live[t.Token()] = true
		}
		for _, t := range u.tokens {
			if !live[t.token] {
				s.pruned = append(s.pruned, t.label)
			}
		}
	}
	if d.fake == nil {
		return s, nil
	}

	type pair struct{ comment, token string }
	got := map[pair]int{}
	for _, r := range d.fake.Accepted() {
		if r.Data["feature"] != "" {
			continue // a product-option notice: the features step checked it
		}
		got[pair{r.Data["comment_id"], r.Token}]++
		s.accepted++
	}
	expected := map[pair]bool{}
	for _, c := range d.comments {
		if c.outcome != demoNotified {
			continue
		}
		for _, t := range c.course.author.tokens {
			if live[t.token] {
				expected[pair{c.id, t.token}] = true
			}
		}
	}
	s.expected = len(expected)
	for p := range expected {
		switch n := got[p]; {
		case n == 0:
			s.lost++
		case n > 1:
			s.duplicates += n - 1
		}
	}
	for p, n := range got {
		switch {
		case rolledBack[p.comment]:
			s.rolledBackPushes += n
		case !expected[p]:
			s.unexpected += n
		}
	}
	return s, nil
}

// problems are the findings that make the demo fail.
func (s *demoSummary) problems() []error {
	var errs []error
	if s.lost > 0 {
		errs = append(errs, fmt.Errorf("%d push(es) lost", s.lost))
	}
	if s.rolledBackPushes > 0 {
		errs = append(errs, fmt.Errorf("%d push(es) for rolled-back comments", s.rolledBackPushes))
	}
	if s.unexpected > 0 {
		errs = append(errs, fmt.Errorf("%d push(es) nobody was owed", s.unexpected))
	}
	if s.rolledBackNotifications > 0 || s.rolledBackRows > 0 {
		errs = append(errs, fmt.Errorf("rolled-back comments left %d notification(s) and %d row(s)",
			s.rolledBackNotifications, s.rolledBackRows))
	}
	if s.notifications != s.notified {
		errs = append(errs, fmt.Errorf("%d notifications stored for %d notified comments", s.notifications, s.notified))
	}
	if s.quotaGap != nil && *s.quotaGap < demoQuotaRetry {
		errs = append(errs, fmt.Errorf("retried %s after QUOTA_EXCEEDED, sooner than Retry-After %s", *s.quotaGap, demoQuotaRetry))
	}
	return errs
}

func (d *demo) printSummary(s *demoSummary) {
	p := d.out.printf
	p("\nsummary\n")
	p("  comments committed      %-3d (%d notify their author, %d own-course, %d rejected: payload too large)   rolled back %d\n",
		s.committed, s.notified, s.ownCourse, s.tooLarge, s.rolledBack)
	p("  notifications created   %-3d (for rolled-back comments %d; their comment rows %d)\n",
		s.notifications, s.rolledBackNotifications, s.rolledBackRows)
	p("  deliveries              sent %d   token pruned %d   failed %d   (open %d)\n",
		s.deliveries[notification.StatusSent], s.deliveries[notification.StatusTokenPruned],
		s.deliveries[notification.StatusFailed], demoOpenCount(s.deliveries))
	if s.fake {
		p("  pushes accepted by FCM  %-3d (expected %d)   duplicates %d   lost %d", s.accepted, s.expected, s.duplicates, s.lost)
		if s.unexpected > 0 {
			p("   unexpected %d", s.unexpected)
		}
		p("\n")
		p("  pushes for rolled-back comments %d\n", s.rolledBackPushes)
	} else {
		p("  pushes accepted by FCM  n/a (real FCM)   duplicates n/a (real FCM)   lost n/a (real FCM)\n")
		p("  pushes for rolled-back comments n/a (real FCM)\n")
	}
	sort.Strings(s.pruned)
	pruned := ""
	if len(s.pruned) > 0 {
		pruned = " (" + strings.Join(s.pruned, ", ") + ")"
	}
	p("  dead tokens pruned      %d%s\n", len(s.pruned), pruned)
	p("  breaker                 opened %d time(s), now %s\n", s.breakerOpens, s.breakerState)
	st := s.stats.Sender
	p("  config alarms %d, quota exceeded %d, retries scheduled %d, refused by the open breaker %d\n",
		st.ConfigAlarms, st.QuotaExceeded, st.RetriesScheduled, st.CircuitOpen)
	if errs := s.problems(); len(errs) > 0 {
		p("  result                  FAILED: %v\n", errors.Join(errs...))
		return
	}
	if s.fake {
		p("  result                  ok: every committed notification reached each live device exactly once; rolled-back comments sent nothing\n")
	} else {
		p("  result                  ok (pushes not checked: real FCM keeps no record we can read)\n")
	}
}
