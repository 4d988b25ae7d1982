package chaos

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/notification"
)

// chaosPoisonMaxStall is how long poison allows the relay to go without
// progress while committed events wait: the relay's ack deadline (3 s),
// after which a message that cannot be handled is given up, plus a few
// seconds for the subscriber to start over.
const chaosPoisonMaxStall = 3*time.Second + 3*time.Second

// chaosPoisonTokenBytes is the size of poison's overlong tokens: more than
// any real FCM token (about 160 bytes) and more than Postgres indexes (a
// btree entry over 2,704 bytes is refused).
const chaosPoisonTokenBytes = 3 << 10

// chaosCrowd is the user poison gives a crowd of tokens; chaosCrowdComment
// is the comment that notifies it.
const (
	chaosCrowd        = "poison-crowd"
	chaosCrowdComment = "poison-crowd-comment"
)

// runChaosPoison feeds Herald hostile input in the middle of a normal run:
// a 3 KB token offered to Register, a 3 KB token written straight into the
// token table for an author who gets notifications, a recipient with
// 100,000 tokens (5,000 in the short form), an event that cannot be encoded
// (a NaN), and a NULL row and a garbage row written straight into the
// outbox table. Every normal push must still be delivered, the relay must
// never stall longer than its ack deadline and a few seconds, and each
// hostile input must get its own answer: Register refuses the token with
// ErrInvalidToken, expansion skips the overlong token, the crowd is
// delivered, Raise fails and writes nothing, and the rows are dead-lettered.
func runChaosPoison(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	crowd := chaosSize(e.opts, 5_000, 100_000)
	s, err := e.setupSteady(ctx, chaosPoisonMaxStall, "the poison halfway through")
	if err != nil {
		return nil, err
	}
	defer s.stopWatch()
	res, load := s.res, s.load
	if !cli.Sleep(ctx, s.over/2) {
		return nil, ctx.Err()
	}
	p, err := e.poison(ctx, s.chaosSetup, crowd)
	if err != nil {
		return nil, err
	}
	e.progress("poison in: %d pushes received so far", e.pushes.total())
	<-s.raising
	if err := s.finish(ctx, 0); err != nil {
		return nil, err
	}
	s.stopWatch()
	if err := p.settle(ctx, e, load.tallied); err != nil {
		return nil, err
	}
	p.report(res)
	return res, nil
}

// chaosPoisonOutcome is what each hostile input got.
type chaosPoisonOutcome struct {
	registerErr     error  // Register's answer to a 3 KB token
	registerToken   string // that token
	directToken     string // the 3 KB token written into the table
	directInsertErr error  // the table's answer, if it refused it
	crowd           int
	nanErr          error // Raise's answer to an event with a NaN
	nanTxErr        error // what the transaction said when used after it
	outboxRows      []string

	// After the run.
	registerPushes, directPushes int
	directDeliveries             int
	crowdSent, crowdPushes       int
	nanRows                      int
	deadLettered                 int
}

// poison injects the hostile input; see runChaosPoison.
func (e *chaosEnv) poison(ctx context.Context, s *chaosSetup, crowd int) (*chaosPoisonOutcome, error) {
	p := &chaosPoisonOutcome{crowd: crowd}
	load := s.load

	// A 3 KB token offered to Register: random, so that it does not
	// compress below the btree's limit.
	p.registerToken = chaosRandomToken(e.rng, chaosPoisonTokenBytes)
	p.registerErr = s.h.Tokens().Register(ctx, chaosAuthor(3), p.registerToken, notification.PlatformAndroid)
	if p.registerErr == nil {
		load.setAsideTokens(p.registerToken) // accepted: count its pushes apart
	}

	// A 3 KB token written straight into the table for an author, as a
	// careless host migration would: compressible, so the index takes it.
	p.directToken = strings.Repeat("poison-token-", chaosPoisonTokenBytes/13+1)[:chaosPoisonTokenBytes]
	if _, err := e.admin.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		VALUES ($1, $2, 'android', now(), now())`, p.directToken, chaosAuthor(4)); err != nil {
		p.directInsertErr = err
	} else {
		load.setAsideTokens(p.directToken)
	}

	// A recipient with a crowd of tokens, and a notification for them.
	if _, err := e.admin.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT $1 || '-' || g, $1, 'android', now(), now() FROM generate_series(1, $2::int) g`, chaosCrowd, crowd); err != nil {
		return nil, fmt.Errorf("register the crowd's tokens: %w", err)
	}
	load.sideComments(chaosCrowdComment)
	if err := load.raiseSide(ctx, notification.CommentCreated{CourseID: "course-of-the-crowd", CourseTitle: "Crowds",
		CommentID: chaosCrowdComment, CommenterID: "reader", CommenterName: "Rita", CourseAuthorID: chaosCrowd}); err != nil {
		return nil, fmt.Errorf("notify the crowd: %w", err)
	}

	// An event that cannot be encoded, then a normal comment in the same
	// transaction, which must still be usable and commit.
	if err := e.poisonNaN(ctx, load, p); err != nil {
		return nil, err
	}

	// Rows no Raise wrote: a NULL payload and a JSON object that is no
	// outbox message.
	garbage := `{"garbage": [1, 2, 3]}`
	for _, payload := range []*string{nil, &garbage} {
		id := uuid.NewString()
		if _, err := e.admin.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
			VALUES ($1, $2::json, NULL, pg_current_xact_id())`, id, payload); err != nil {
			return nil, fmt.Errorf("write a row into the outbox: %w", err)
		}
		p.outboxRows = append(p.outboxRows, id)
	}
	e.progress("poisoned: register 3 KB token: %v; direct 3 KB token: %v; crowd of %d; NaN raise: %v; outbox rows %d",
		p.registerErr, p.directInsertErr, crowd, p.nanErr, len(p.outboxRows))
	return p, nil
}

// poisonNaN raises a chaosScored with a NaN score, then a normal comment
// in the same transaction, and commits.
func (e *chaosEnv) poisonNaN(ctx context.Context, load *chaosLoad, p *chaosPoisonOutcome) error {
	ctx, cancel := context.WithTimeout(ctx, chaosTxTimeout)
	defer cancel()
	tx, err := e.host.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	_, p.nanErr = load.raise(ctx, tx, chaosScored{UserID: chaosAuthor(5), Score: math.NaN()})
	id, ev := load.next()
	if _, err := tx.Exec(ctx, `INSERT INTO chaos_comments (id, author_id) VALUES ($1, $2)`, id, ev.CourseAuthorID); err != nil {
		p.nanTxErr = err
		return nil
	}
	if _, err := load.raise(ctx, tx, ev); err != nil {
		p.nanTxErr = err
		return nil
	}
	if err := tx.Commit(ctx); err != nil {
		p.nanTxErr = err
		return nil
	}
	load.commits.Add(1)
	return nil
}

// settle reads, once Herald is idle, what became of each hostile input.
func (p *chaosPoisonOutcome) settle(ctx context.Context, e *chaosEnv, t *chaosTally) error {
	if t != nil {
		p.registerPushes = t.setAsidePushes[p.registerToken]
		p.directPushes = t.setAsidePushes[p.directToken]
		p.crowdPushes = t.sidePushes[chaosCrowdComment]
	}
	return e.admin.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM herald_deliveries WHERE token = $1),
			(SELECT count(*) FROM herald_deliveries d JOIN herald_notifications n ON n.id = d.notification_id
				WHERE n.recipient = $2 AND d.status = 'sent'),
			(SELECT count(*) FROM herald_notifications WHERE type = 'chaos_scored'),
			(SELECT count(DISTINCT message_uuid) FROM herald_dead_letters WHERE message_uuid = ANY($3))`,
		p.directToken, chaosCrowd, p.outboxRows).Scan(&p.directDeliveries, &p.crowdSent, &p.nanRows, &p.deadLettered)
}

// report writes the figures into res and checks each input's promise.
func (p *chaosPoisonOutcome) report(res *chaosResult) {
	res.set("register_3kb_token", chaosErrText(p.registerErr))
	res.set("register_3kb_token_pushes", p.registerPushes)
	res.set("direct_3kb_token", chaosErrText(p.directInsertErr))
	res.set("direct_3kb_token_deliveries", p.directDeliveries)
	res.set("direct_3kb_token_pushes", p.directPushes)
	res.set("crowd_tokens", p.crowd)
	res.set("crowd_sent", p.crowdSent)
	res.set("crowd_pushes", p.crowdPushes)
	res.set("nan_raise", chaosErrText(p.nanErr))
	res.set("nan_tx_after", chaosErrText(p.nanTxErr))
	res.set("nan_notifications_written", p.nanRows)
	res.set("outbox_rows_injected", len(p.outboxRows))
	res.set("outbox_rows_dead_lettered", p.deadLettered)

	res.check(errors.Is(p.registerErr, notification.ErrInvalidToken),
		"Register answered %v to a 3 KB token, want notification.ErrInvalidToken", p.registerErr)
	res.check(p.directInsertErr != nil || p.directDeliveries == 0,
		"expansion made %d deliveries for a 3 KB token written into the table (promise: skipped)", p.directDeliveries)
	res.check(p.directPushes == 0 && p.registerPushes == 0, "%d pushes reached fcm for 3 KB tokens", p.directPushes+p.registerPushes)
	res.check(p.crowdSent == p.crowd, "%d of the crowd's %d deliveries sent", p.crowdSent, p.crowd)
	res.check(p.nanErr != nil, "Raise accepted an event with a NaN")
	res.check(p.nanTxErr == nil, "the host's transaction was unusable after Raise refused an event: %v", p.nanTxErr)
	res.check(p.nanRows == 0, "Raise refused an event but left %d notifications in the committed transaction (promise: all or nothing)", p.nanRows)
	res.check(p.deadLettered == len(p.outboxRows), "%d of %d rows written into the outbox were dead-lettered", p.deadLettered, len(p.outboxRows))
}

// chaosRandomToken returns n random characters of the FCM token alphabet.
func chaosRandomToken(rng *rand.Rand, n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_:"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

// chaosErrText is an error's text for a JSON field: "ok" for nil.
func chaosErrText(err error) string {
	if err == nil {
		return "ok"
	}
	const limit = 200
	if msg := err.Error(); len(msg) > limit {
		return msg[:limit] + "…"
	}
	return err.Error()
}
