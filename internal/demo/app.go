package demo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/notification"
)

// This file is the demo's host application: its own tables, users, devices
// and the "post a comment" use case that raises CommentCreated in the same
// transaction as its own writes.

// demoSchema is the host's own schema, in the same database as Herald's.
const demoSchema = `
CREATE TABLE IF NOT EXISTS demo_courses (
    id            text PRIMARY KEY,
    title         text NOT NULL,
    author_id     text NOT NULL,
    comment_count integer NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS demo_comments (
    id         text PRIMARY KEY,
    course_id  text NOT NULL REFERENCES demo_courses (id),
    author_id  text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)`

type demoUser struct {
	name    string // shown
	id      string // stored: name, prefixed on a shared database
	display string // the commenter name in notifications
	tokens  []*demoToken
}

type demoToken struct {
	label    string // shown
	token    string // stored
	platform notification.Platform
	fault    *fakefcm.Fault // scripted on the fake FCM, if any
	note     string
}

type demoCourse struct {
	id     string
	title  string
	author *demoUser
}

// demoOutcome is what became of a comment the host tried to post.
type demoOutcome int

const (
	demoPending    demoOutcome = iota // not committed or rolled back yet
	demoNotified                      // committed with a notification
	demoOwnCourse                     // committed; the rule notifies nobody
	demoTooLarge                      // committed; Raise refused the notification
	demoRolledBack                    // the host rolled back its transaction
)

type demoComment struct {
	label        string // "c-3"
	id           string // stored
	by           *demoUser
	course       *demoCourse
	outcome      demoOutcome
	notification *notification.Notification // committed or rolled back with the transaction
	reported     bool                       // its deliveries were printed
}

// demo is one run of the scenario.
type demo struct {
	out  *demoConsole
	env  *environment
	fake *fakefcm.Server // nil with real FCM
	ns   string          // prefix of every stored id; empty on a throwaway database

	users    []*demoUser
	byID     map[string]*demoUser
	labels   map[string]string // token -> label
	courses  map[string]*demoCourse
	comments []*demoComment

	cfg     herald.Config
	h       *herald.Herald
	stopRun context.CancelFunc
	runDone chan struct{}
	runErr  error
	breaker *demoBreakerWatch
	stopped bool
	console *operatorConsole // nil without -console

	quotaAt  time.Time      // when FCM throttled the push
	quotaGap *time.Duration // from the throttling to the accepted retry
}

func newDemo(out *demoConsole, env *environment, realToken string) *demo {
	d := &demo{out: out, env: env, fake: env.Fake, byID: map[string]*demoUser{},
		labels: map[string]string{}, courses: map[string]*demoCourse{}}
	if env.Cluster == nil {
		// A shared database keeps earlier runs' rows: keep this run's apart.
		d.ns = fmt.Sprintf("demo-%s-%04x-", time.Now().UTC().Format("20060102t150405"), rand.IntN(1<<16))
	}
	dead := &fakefcm.Fault{Code: fakefcm.FaultUnregistered}
	flaky := &fakefcm.Fault{Code: fakefcm.FaultInternal, Times: 2}
	alice := d.addUser("alice", "Alice",
		&demoToken{label: "alice-pixel", platform: notification.PlatformAndroid},
		&demoToken{label: "alice-iphone", platform: notification.PlatformIOS},
		&demoToken{label: "alice-old-tablet", platform: notification.PlatformAndroid, fault: dead,
			note: "dead: the app was uninstalled, FCM answers UNREGISTERED"})
	bob := d.addUser("bob", "Bob",
		&demoToken{label: "bob-laptop", platform: notification.PlatformWeb},
		&demoToken{label: "bob-phone", platform: notification.PlatformAndroid, fault: flaky,
			note: "flaky: FCM answers 500 INTERNAL twice"})
	carol := d.addUser("carol", "Carol", &demoToken{label: "carol-iphone", platform: notification.PlatformIOS})
	d.addUser("dave", "Dave")
	if realToken != "" {
		t := &demoToken{label: "alice-real-device", platform: notification.PlatformAndroid, note: "given with -token"}
		t.token = realToken
		alice.tokens = append(alice.tokens, t)
		d.labels[t.token] = t.label
	}

	d.addCourse("go", "Go in Practice", alice)
	d.addCourse("pg", "Postgres Internals", bob)
	d.addCourse("k8s", "Kubernetes for Humans", carol)
	// A title long enough that "New comment on <title>" exceeds FCM's
	// 4096-byte payload limit.
	var title strings.Builder
	title.WriteString("The Annotated Go Specification: ")
	for title.Len() < notification.MaxPayloadBytes+100 {
		title.WriteString("every rule, every example, every footnote; ")
	}
	d.addCourse("spec", strings.TrimSuffix(title.String(), "; ")+".", carol)
	return d
}

func (d *demo) addUser(name, display string, tokens ...*demoToken) *demoUser {
	u := &demoUser{name: name, id: d.ns + name, display: display, tokens: tokens}
	for _, t := range tokens {
		t.token = d.ns + t.label
		d.labels[t.token] = t.label
	}
	d.users = append(d.users, u)
	d.byID[u.id] = u
	return u
}

func (d *demo) addCourse(key, title string, author *demoUser) {
	d.courses[key] = &demoCourse{id: d.ns + "course-" + key, title: title, author: author}
}

func (d *demo) user(name string) *demoUser { return d.byID[d.ns+name] }

// setUp creates the host's tables and courses and registers the devices.
func (d *demo) setUp(ctx context.Context) error {
	d.out.section("setup")
	pool := d.env.Pool
	if _, err := pool.Exec(ctx, demoSchema); err != nil {
		return fmt.Errorf("create the demo's tables: %w", err)
	}
	d.out.event("schema", "host tables demo_courses and demo_comments, next to Herald's in the same database")
	for _, key := range []string{"go", "pg", "k8s", "spec"} {
		c := d.courses[key]
		if _, err := pool.Exec(ctx, `INSERT INTO demo_courses (id, title, author_id) VALUES ($1, $2, $3)`,
			c.id, c.title, c.author.id); err != nil {
			return fmt.Errorf("create course %s: %w", key, err)
		}
		d.out.event("course", "%s by %s", demoTitle(c.title), c.author.name)
	}
	tokens := d.h.Tokens()
	for _, u := range d.users {
		for _, t := range u.tokens {
			if err := tokens.Register(ctx, u.id, t.token, t.platform); err != nil {
				return fmt.Errorf("register %s's device %s: %w", u.name, t.label, err)
			}
			note := t.note
			if d.fake != nil && t.fault != nil {
				d.fake.FailToken(t.token, *t.fault)
			} else if d.fake == nil && t.fault != nil {
				note = "invented token: real FCM will reject it and Herald will prune it (fault not injected)"
			} else if d.fake == nil && t.note == "" {
				note = "invented token: real FCM will reject it and Herald will prune it"
			}
			line := fmt.Sprintf("%-6s %-18s %s", u.name, t.label, t.platform)
			if note != "" {
				line = fmt.Sprintf("%-34s <- %s", line, note)
			}
			d.out.event("device", "%s", line)
		}
		if len(u.tokens) == 0 {
			d.out.event("device", "%-6s (no devices: comments, owns no course)", u.name)
		}
	}
	return nil
}

// newHerald builds Herald with the host's rules. It starts nothing: tokens
// can be registered before Run.
func (d *demo) newHerald(cfg herald.Config) error {
	rules := notification.NewRules()
	if err := notification.On(rules, notification.NotifyCourseAuthor); err != nil {
		return err
	}
	if err := notification.On(rules, notifyNotice); err != nil {
		return err
	}
	h, err := herald.New(d.env.Pool, d.env.FCM, rules, cfg)
	if err != nil {
		return err
	}
	d.h = h
	if d.console != nil {
		d.console.serve(h)
		d.out.event("console", "operator console at %s", d.console.URL())
	}
	return nil
}

// errDemoHeraldStopped reports that Herald's Run returned before the demo
// stopped it.
var errDemoHeraldStopped = errors.New("herald stopped before the demo stopped it")

// start runs Herald in the background until stop, and watches its breaker.
func (d *demo) start(ctx context.Context) {
	runCtx, cancel := context.WithCancel(ctx)
	d.stopRun = cancel
	d.runDone = make(chan struct{})
	go func() {
		defer close(d.runDone)
		d.runErr = d.h.Run(runCtx)
	}()
	d.breaker = watchDemoBreaker(runCtx, d.h, d.out)
	cfg := d.cfg
	d.out.event("herald", "running: relay + sender; retries %s..%s, breaker opens after %d provider failures for %s, send timeout %s",
		cfg.Sender.Retry.BaseDelay, cfg.Sender.Retry.MaxDelay, cfg.FCM.BreakerFailures, cfg.FCM.BreakerOpenFor, cfg.FCM.SendTimeout)
}

// stop cancels Run, waits for it to return (pushes in flight finish and are
// recorded) and stops the breaker watch. It is idempotent.
func (d *demo) stop() error {
	if d.runDone == nil || d.stopped {
		return nil
	}
	d.stopped = true
	d.stopRun()
	<-d.runDone
	d.breaker.stop()
	if d.runErr != nil {
		return fmt.Errorf("herald run: %w", d.runErr)
	}
	return nil
}

// heraldDied reports Run's early return as an error, or nil while it runs.
func (d *demo) heraldDied() error {
	select {
	case <-d.runDone:
		if d.runErr != nil {
			return fmt.Errorf("%w: %w", errDemoHeraldStopped, d.runErr)
		}
		return errDemoHeraldStopped
	default:
		return nil
	}
}

// newComment names the next comment.
func (d *demo) newComment(by *demoUser, course *demoCourse) *demoComment {
	label := fmt.Sprintf("c-%d", len(d.comments)+1)
	c := &demoComment{label: label, id: d.ns + label, by: by, course: course}
	d.comments = append(d.comments, c)
	return c
}

// writeComment is the host's own write plus Herald's, inside tx: it stores
// the comment, counts it on the course, and raises CommentCreated.
func (d *demo) writeComment(ctx context.Context, tx pgx.Tx, c *demoComment, body string) ([]*notification.Notification, error) {
	if _, err := tx.Exec(ctx, `INSERT INTO demo_comments (id, course_id, author_id, body) VALUES ($1, $2, $3, $4)`,
		c.id, c.course.id, c.by.id, body); err != nil {
		return nil, fmt.Errorf("insert comment %s: %w", c.label, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE demo_courses SET comment_count = comment_count + 1 WHERE id = $1`, c.course.id); err != nil {
		return nil, fmt.Errorf("count comment %s: %w", c.label, err)
	}
	return d.h.Raise(ctx, tx, notification.CommentCreated{
		CourseID: c.course.id, CourseTitle: c.course.title, CommentID: c.id,
		CommenterID: c.by.id, CommenterName: c.by.display, CourseAuthorID: c.course.author.id,
	})
}

// post is the host's "post a comment" use case, in one transaction. With a
// rollback reason, the host changes its mind after Raise (a spam filter, a
// closed course...) and rolls back: the notification goes with it.
func (d *demo) post(ctx context.Context, by, courseKey, body, rollbackReason string) (*demoComment, error) {
	c := d.newComment(d.user(by), d.courses[courseKey])
	tx, err := d.env.Pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after commit
	ns, err := d.writeComment(ctx, tx, c, body)
	if err != nil {
		return nil, err
	}
	if len(ns) > 0 {
		c.notification = ns[0]
	}
	if rollbackReason != "" {
		if err := tx.Rollback(ctx); err != nil {
			return nil, fmt.Errorf("roll back comment %s: %w", c.label, err)
		}
		c.outcome = demoRolledBack
		d.out.event("rollback", "%s by %s on %s: %s", c.label, by, demoTitle(c.course.title), rollbackReason)
		if c.notification != nil {
			d.out.more("Raise had returned notification %s for %s; ROLLBACK discards it with the comment", demoShortID(c.notification), c.course.author.name)
		}
		return c, nil
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit comment %s: %w", c.label, err)
	}
	d.printCommitted(c, "")
	return c, nil
}

func (d *demo) printCommitted(c *demoComment, suffix string) {
	if c.notification == nil {
		c.outcome = demoOwnCourse
		d.out.event("commit", "%s by %s on their own course %s -> no notification (the rule skips the author)%s",
			c.label, c.by.name, demoTitle(c.course.title), suffix)
		return
	}
	c.outcome = demoNotified
	d.out.event("commit", "%s by %s on %s -> notification %s for %s%s",
		c.label, c.by.name, demoTitle(c.course.title), demoShortID(c.notification), c.course.author.name, suffix)
}

// postOversized posts a comment whose notification is over FCM's payload
// limit: Raise refuses it with a typed error and writes nothing, so the
// host keeps the comment without a notification and goes on in the same
// transaction with another comment, then commits both.
func (d *demo) postOversized(ctx context.Context, by, courseKey, thenBy, thenCourseKey string) error {
	big := d.newComment(d.user(by), d.courses[courseKey])
	tx, err := d.env.Pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after commit
	_, raiseErr := d.writeComment(ctx, tx, big, "Which edition covers generics?")
	var tooLarge *notification.PayloadTooLargeError
	if !errors.As(raiseErr, &tooLarge) {
		return fmt.Errorf("comment %s on an oversized title: want a *notification.PayloadTooLargeError, got %v", big.label, raiseErr)
	}
	big.outcome = demoTooLarge
	d.out.event("rejected", "%s by %s on %s: Raise returned %T", big.label, by, demoTitle(big.course.title), tooLarge)
	d.out.more("%v", raiseErr)
	d.out.more("errors.Is(err, notification.ErrPayloadTooLarge) = %t; nothing was written, the transaction is intact",
		errors.Is(raiseErr, notification.ErrPayloadTooLarge))
	d.out.more("the host keeps the comment without a push and carries on in the same transaction:")

	next := d.newComment(d.user(thenBy), d.courses[thenCourseKey])
	ns, err := d.writeComment(ctx, tx, next, "Chapter 3 finally made channels click.")
	if err != nil {
		return err
	}
	if len(ns) > 0 {
		next.notification = ns[0]
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit comments %s and %s: %w", big.label, next.label, err)
	}
	d.printCommitted(next, fmt.Sprintf(" (same transaction as %s, committed)", big.label))
	return nil
}

func demoTitle(title string) string {
	const shown = 40
	if len(title) <= shown {
		return `"` + title + `"`
	}
	return fmt.Sprintf(`"%s…" (%d-byte title)`, title[:shown], len(title))
}

// demoShortID is the end of a notification id: its start is a timestamp,
// the same for every notification of a run.
func demoShortID(n *notification.Notification) string {
	s := n.ID().String()
	return "…" + s[len(s)-8:]
}
