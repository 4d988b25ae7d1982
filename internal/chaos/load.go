package chaos

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/notification"
)

// The host application of the chaos scenarios: course authors with a few
// devices each, and readers commenting on their courses, one comment per
// transaction, the comment row and its CommentCreated event written
// together. Every twentieth transaction is rolled back after raising.
const (
	chaosAuthors         = 50
	chaosTokensPerAuthor = 4
	chaosRollbackEvery   = 20
	// chaosTxTimeout bounds one host transaction.
	chaosTxTimeout = 10 * time.Second
)

const chaosSchema = `CREATE TABLE IF NOT EXISTS chaos_comments (
    id        text PRIMARY KEY,
    author_id text NOT NULL
)`

// chaosRaiseFunc is Herald's Raise (herald.Herald.Raise or outbox.Outbox.Raise).
type chaosRaiseFunc func(ctx context.Context, tx pgx.Tx, events ...notification.Event) ([]*notification.Notification, error)

// chaosLoad writes the host application's transactions and remembers what
// it rolled back. What was committed is read back from the database at the
// end, not remembered: a commit cut by a crash may or may not have happened.
type chaosLoad struct {
	e     *chaosEnv
	raise chaosRaiseFunc
	seq   atomic.Int64

	commits    atomic.Int64 // acknowledged commits
	hostErrors atomic.Int64 // transactions that failed (retried with a new comment)

	mu         sync.Mutex
	rolledBack []string // comments whose transaction rolled back after raising
	forbidden  []string // comments of transactions cut before commit (connection-cut)
	// setAside are tokens left out of the accounting of expected pushes
	// (poison's overlong token, token-moves' moved tokens); pushes to them
	// are counted apart, by comment, in chaosTally.setAsidePushes.
	setAside map[string]bool
	// side are comments raised outside the load (poison's crowd); their
	// pushes are counted apart in chaosTally.sidePushes.
	side map[string]bool
	// allowEnd are delivery statuses other than sent a scenario accepts as
	// a delivery's end (token-moves: token_moved).
	allowEnd map[notification.DeliveryStatus]bool
	// tallied is the last tally, for the scenario's own figures.
	tallied *chaosTally
}

// newChaosLoad creates the host's table and registers every author's devices.
func newChaosLoad(ctx context.Context, e *chaosEnv, raise chaosRaiseFunc) (*chaosLoad, error) {
	if _, err := e.admin.Exec(ctx, chaosSchema); err != nil {
		return nil, fmt.Errorf("create the host's table: %w", err)
	}
	now := time.Now()
	var tokens []*notification.DeviceToken
	for a := range chaosAuthors {
		for d := range chaosTokensPerAuthor {
			platform := []notification.Platform{notification.PlatformAndroid, notification.PlatformIOS, notification.PlatformWeb}[d%3]
			tok, err := notification.NewDeviceToken(chaosAuthor(a), fmt.Sprintf("%s-device-%d", chaosAuthor(a), d), platform, now)
			if err != nil {
				return nil, err
			}
			tokens = append(tokens, tok)
		}
	}
	if err := adapters.NewPostgresDeviceTokenRepository(e.admin).UpsertMany(ctx, tokens); err != nil {
		return nil, fmt.Errorf("register devices: %w", err)
	}
	return &chaosLoad{e: e, raise: raise, setAside: map[string]bool{}, side: map[string]bool{},
		allowEnd: map[notification.DeliveryStatus]bool{}}, nil
}

// setAsideTokens leaves tokens out of the expected pushes; pushes to them
// are counted apart.
func (l *chaosLoad) setAsideTokens(tokens ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range tokens {
		l.setAside[t] = true
	}
}

// sideComments marks comments raised outside the load: their pushes are
// counted apart, not as unexpected.
func (l *chaosLoad) sideComments(ids ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		l.side[id] = true
	}
}

// allowEnds accepts deliveries ending in these statuses besides sent.
func (l *chaosLoad) allowEnds(statuses ...notification.DeliveryStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, st := range statuses {
		l.allowEnd[st] = true
	}
}

func chaosAuthor(i int) string { return fmt.Sprintf("author-%02d", i) }

// chaosComments returns how many comments make about deliveries pushes.
func chaosComments(deliveries int) int { return max(1, deliveries/chaosTokensPerAuthor) }

// next returns a new comment id and its event.
func (l *chaosLoad) next() (string, notification.CommentCreated) {
	n := l.seq.Add(1)
	id := fmt.Sprintf("comment-%06d", n)
	author := chaosAuthor(int(n) % chaosAuthors)
	return id, notification.CommentCreated{
		CourseID: "course-of-" + author, CourseTitle: "Chaos Engineering", CommentID: id,
		CommenterID: "reader", CommenterName: "Rita", CourseAuthorID: author,
	}
}

// writeComment is the host's use case: the comment row and its event in
// one transaction, left open for the caller to finish. On error the
// transaction is rolled back.
func (l *chaosLoad) writeComment(ctx context.Context, id string, ev notification.CommentCreated) (pgx.Tx, error) {
	tx, err := l.e.host.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO chaos_comments (id, author_id) VALUES ($1, $2)`, id, ev.CourseAuthorID); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, err
	}
	if _, err := l.raise(ctx, tx, ev); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, err
	}
	return tx, nil
}

// commitOne commits one comment, retrying with a new comment after a
// failure (a failed commit may still have happened: the database decides).
func (l *chaosLoad) commitOne(ctx context.Context) {
	backoff := 20 * time.Millisecond
	for ctx.Err() == nil {
		err := func() error {
			ctx, cancel := context.WithTimeout(ctx, chaosTxTimeout)
			defer cancel()
			id, ev := l.next()
			tx, err := l.writeComment(ctx, id, ev)
			if err != nil {
				return err
			}
			return tx.Commit(ctx)
		}()
		if err == nil {
			l.commits.Add(1)
			return
		}
		l.hostErrors.Add(1)
		cli.Sleep(ctx, backoff)
		backoff = min(2*backoff, time.Second)
	}
}

// rollbackOne raises an event and rolls its transaction back.
func (l *chaosLoad) rollbackOne(ctx context.Context) {
	for attempt := 0; attempt < 20 && ctx.Err() == nil; attempt++ {
		id, ev := l.next()
		// Remembered first: whatever happens, it was never committed.
		l.mu.Lock()
		l.rolledBack = append(l.rolledBack, id)
		l.mu.Unlock()
		ok := func() bool {
			ctx, cancel := context.WithTimeout(ctx, chaosTxTimeout)
			defer cancel()
			tx, err := l.writeComment(ctx, id, ev)
			if err != nil {
				return false
			}
			_ = tx.Rollback(ctx) // a failed rollback is a rollback too
			return true
		}()
		if ok {
			return
		}
		l.hostErrors.Add(1)
		cli.Sleep(ctx, 50*time.Millisecond)
	}
}

// raiseSide raises events in a host transaction of their own, outside the
// load's accounting (mark their comments with sideComments), and commits.
func (l *chaosLoad) raiseSide(ctx context.Context, events ...notification.Event) error {
	ctx, cancel := context.WithTimeout(ctx, chaosTxTimeout)
	defer cancel()
	tx, err := l.e.host.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	if _, err := l.raise(ctx, tx, events...); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// forbid records comments whose transactions must have left nothing.
func (l *chaosLoad) forbid(ids ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forbidden = append(l.forbidden, ids...)
}

// run commits comments at an even pace over the given time from the given
// number of concurrent writers, rolling back one more transaction every
// chaosRollbackEvery commits. It returns when all are written or ctx ends.
func (l *chaosLoad) run(ctx context.Context, comments int, over time.Duration, writers int) {
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(comments) {
					return
				}
				at := start.Add(time.Duration(float64(over) * float64(i) / float64(comments)))
				if !cli.Sleep(ctx, time.Until(at)) {
					return
				}
				l.commitOne(ctx)
				if i%chaosRollbackEvery == chaosRollbackEvery-1 {
					l.rollbackOne(ctx)
				}
			}
		})
	}
	wg.Wait()
}

// runAsync runs run in a goroutine; the channel closes when it is done.
func (l *chaosLoad) runAsync(ctx context.Context, comments int, over time.Duration, writers int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx, comments, over, writers)
	}()
	return done
}

// chaosPushKey identifies one push: a comment and a device token.
type chaosPushKey struct{ comment, token string }

// chaosPushCounter counts the pushes the fake FCM accepted, by comment and token,
// with the time of each.
type chaosPushCounter struct {
	mu    sync.Mutex
	byKey map[chaosPushKey]int
	first map[chaosPushKey]time.Time // when each key was first accepted
	times []time.Time
	// arrivals are when each push reached the fake, before its latency.
	arrivals []time.Time
	// watched tokens have each of their pushes kept, with its time.
	watched       map[string]bool
	watchedPushes []chaosTimedPush
}

// chaosTimedPush is one accepted push to a watched token.
type chaosTimedPush struct {
	chaosPushKey
	at time.Time
}

func newChaosPushCounter() *chaosPushCounter {
	return &chaosPushCounter{byKey: map[chaosPushKey]int{}, first: map[chaosPushKey]time.Time{}}
}

// accept is the fake's OnAccept.
func (c *chaosPushCounter) accept(r fakefcm.Received) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := chaosPushKey{r.Data["comment_id"], r.Token}
	c.byKey[k]++
	if first, ok := c.first[k]; !ok || r.At.Before(first) {
		c.first[k] = r.At
	}
	c.times = append(c.times, r.At)
	c.arrivals = append(c.arrivals, r.Arrived)
	if c.watched[r.Token] {
		c.watchedPushes = append(c.watchedPushes, chaosTimedPush{k, r.At})
	}
}

// watch keeps every later push to tokens, with its time.
func (c *chaosPushCounter) watch(tokens ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watched == nil {
		c.watched = map[string]bool{}
	}
	for _, t := range tokens {
		c.watched[t] = true
	}
}

// pushesToWatched returns the pushes to watched tokens so far.
func (c *chaosPushCounter) pushesToWatched() []chaosTimedPush {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]chaosTimedPush(nil), c.watchedPushes...)
}

func (c *chaosPushCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.times)
}

func (c *chaosPushCounter) count(k chaosPushKey) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byKey[k]
}

// firstAt returns when the first push of k was accepted, if any was.
func (c *chaosPushCounter) firstAt(k chaosPushKey) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.first[k]
	return at, ok
}

func (c *chaosPushCounter) snapshot() map[chaosPushKey]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[chaosPushKey]int, len(c.byKey))
	for k, v := range c.byKey {
		m[k] = v
	}
	return m
}

// rate returns the pushes accepted per second between from and to.
func (c *chaosPushCounter) rate(from, to time.Time) float64 {
	if !to.After(from) {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.times {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return float64(n) / to.Sub(from).Seconds()
}

// lastAt returns when the last push was accepted.
func (c *chaosPushCounter) lastAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last time.Time
	for _, t := range c.times {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// finish waits until Herald has nothing left to do, stops it with stop,
// and writes the accounting into res with the given duplicates bound.
func (l *chaosLoad) finish(ctx context.Context, res *chaosResult, stop func() error, bound int) error {
	l.e.progress("waiting for herald to deliver everything")
	if err := l.e.waitIdle(ctx, l.e.drainTimeout()); err != nil {
		res.check(false, "%v", err)
	}
	if err := stop(); err != nil {
		res.check(false, "herald stopped with an error: %v", err)
	}
	t, err := l.tally(ctx)
	if err != nil {
		return err
	}
	t.apply(res, bound)
	l.tallied = t
	res.set("host_tx_failed", l.hostErrors.Load())
	l.e.progress("%d events committed, %d rolled back; %d pushes expected, %d received, %d lost, %d duplicates",
		t.committed, t.rolledBack, len(t.expected), t.received, t.lost, t.duplicates)
	return nil
}

// chaosTally is the accounting every scenario ends with.
type chaosTally struct {
	committed, rolledBack, forbidden int
	expected                         map[chaosPushKey]bool
	received                         int
	lost, duplicates                 int
	forbiddenPushes, unexpected      int
	forbiddenRows                    int // rows left by rolled-back or cut transactions
	notSent                          map[notification.DeliveryStatus]int
	allowedEnds                      map[notification.DeliveryStatus]int // not sent, but accepted by the scenario
	maxCopies                        int
	// setAsidePushes counts pushes to set-aside tokens by token;
	// sidePushes counts pushes of side comments by comment.
	setAsidePushes map[string]int
	sidePushes     map[string]int
}

// tally compares what the database says was committed with what the fake
// FCM received. Call it once Herald is idle and stopped.
func (l *chaosLoad) tally(ctx context.Context) (*chaosTally, error) {
	t := &chaosTally{expected: map[chaosPushKey]bool{}, notSent: map[notification.DeliveryStatus]int{},
		allowedEnds: map[notification.DeliveryStatus]int{}, setAsidePushes: map[string]int{}, sidePushes: map[string]int{}}
	l.mu.Lock()
	setAside := make([]string, 0, len(l.setAside))
	for tok := range l.setAside {
		setAside = append(setAside, tok)
	}
	l.mu.Unlock()
	if err := l.e.admin.QueryRow(ctx, `SELECT count(*) FROM chaos_comments`).Scan(&t.committed); err != nil {
		return nil, fmt.Errorf("count committed comments: %w", err)
	}
	rows, err := l.e.admin.Query(ctx, `SELECT c.id, t.token FROM chaos_comments c
		JOIN herald_device_tokens t ON t.user_id = c.author_id
		WHERE t.token <> ALL ($1::text[])`, setAside)
	if err != nil {
		return nil, fmt.Errorf("list expected pushes: %w", err)
	}
	var k chaosPushKey
	if _, err := pgx.ForEachRow(rows, []any{&k.comment, &k.token}, func() error {
		t.expected[k] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list expected pushes: %w", err)
	}

	l.mu.Lock()
	forbidden := map[string]bool{}
	var forbiddenIDs []string
	for _, id := range append(append([]string(nil), l.rolledBack...), l.forbidden...) {
		forbidden[id] = true
		forbiddenIDs = append(forbiddenIDs, id)
	}
	t.rolledBack, t.forbidden = len(l.rolledBack), len(l.forbidden)
	l.mu.Unlock()
	if err := l.e.admin.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM chaos_comments WHERE id = ANY($1)) +
			(SELECT count(*) FROM herald_notifications WHERE data->>'comment_id' = ANY($1))`,
		forbiddenIDs).Scan(&t.forbiddenRows); err != nil {
		return nil, fmt.Errorf("look for rolled-back rows: %w", err)
	}

	received := l.e.pushes.snapshot()
	l.mu.Lock()
	for key, n := range received {
		t.received += n
		switch {
		case l.setAside[key.token]:
			t.setAsidePushes[key.token] += n
		case l.side[key.comment]:
			t.sidePushes[key.comment] += n
		case t.expected[key]:
			t.duplicates += n - 1
			t.maxCopies = max(t.maxCopies, n)
		case forbidden[key.comment]:
			t.forbiddenPushes += n
		default:
			t.unexpected += n
		}
	}
	allow := maps.Clone(l.allowEnd)
	l.mu.Unlock()
	for key := range t.expected {
		if received[key] == 0 {
			t.lost++
		}
	}

	counts, err := adapters.NewPostgresDeliveryRepository(l.e.admin).CountByStatus(ctx)
	if err != nil {
		return nil, err
	}
	for status, n := range counts {
		switch {
		case status == notification.StatusSent:
		case allow[status]:
			t.allowedEnds[status] = n
		default:
			t.notSent[status] = n
		}
	}
	return t, nil
}

// apply writes the tally into the result and checks the promises every
// scenario shares: nothing lost, nothing for a rolled-back or cut
// transaction, duplicates within the bound, every delivery recorded sent.
func (t *chaosTally) apply(res *chaosResult, bound int) {
	res.CommittedEvents = t.committed
	res.RolledBackEvents = t.rolledBack
	res.ExpectedPushes = len(t.expected)
	res.Received = int64(t.received)
	res.Lost = t.lost
	res.Duplicates = t.duplicates
	res.DuplicatesBound = bound
	res.set("pushes_for_rolled_back", t.forbiddenPushes)
	if t.unexpected > 0 {
		res.set("unexpected_pushes", t.unexpected)
	}
	if len(t.notSent) > 0 {
		res.set("deliveries_not_sent", chaosStatusCounts(t.notSent))
	}
	if len(t.allowedEnds) > 0 {
		res.set("deliveries_ended", chaosStatusCounts(t.allowedEnds))
	}
	res.check(t.committed > 0, "no event was committed")
	res.check(t.lost == 0, "%d committed pushes never reached fcm", t.lost)
	res.check(t.duplicates <= bound, "%d duplicates, more than the bound %d", t.duplicates, bound)
	res.check(t.forbiddenPushes == 0, "%d pushes for rolled-back or cut transactions", t.forbiddenPushes)
	res.check(t.forbiddenRows == 0, "%d rows left by rolled-back or cut transactions", t.forbiddenRows)
	res.check(t.unexpected == 0, "%d pushes for no committed event", t.unexpected)
	res.check(len(t.notSent) == 0, "deliveries not recorded sent: %s", chaosStatusCounts(t.notSent))
}

// chaosStatusCounts renders counts by status in a stable order.
func chaosStatusCounts(m map[notification.DeliveryStatus]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s %d", k, m[notification.DeliveryStatus(k)])
	}
	return s
}
