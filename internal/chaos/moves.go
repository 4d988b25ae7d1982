package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/notification"
)

// chaosStatusTokenMoved is the end of a delivery whose token moved to
// another user before it was sent (the owner change of issue 7).
const chaosStatusTokenMoved notification.DeliveryStatus = "token_moved"

// runChaosTokenMoves moves device tokens to other users while deliveries
// for their previous owners wait for a retry: FCM answers 503 for those
// tokens, each token is then registered by another user, then the fault
// clears. A push for the previous owner must never reach a device that
// now belongs to someone else. Every other push is delivered.
func runChaosTokenMoves(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	deliveries := e.deliveries(2_000, 20_000)
	over := chaosSize(e.opts, 4*time.Second, 16*time.Second)
	moving := chaosSize(e.opts, 5, 20)

	s, err := e.setupDefault(ctx)
	if err != nil {
		return nil, err
	}
	res, h, load := s.res, s.h, s.load

	// One device each of the first authors; its previous owner is the author.
	tokens := make([]string, moving)
	owner := map[string]string{}
	for i := range tokens {
		tokens[i] = fmt.Sprintf("%s-device-%d", chaosAuthor(i), 0)
		owner[tokens[i]] = chaosAuthor(i)
		e.fake.FailToken(tokens[i], fakefcm.Fault{Code: fakefcm.FaultUnavailable})
	}
	e.pushes.watch(tokens...)
	load.setAsideTokens(tokens...)        // their old owners' pushes are not expected
	load.allowEnds(chaosStatusTokenMoved) // that is how their deliveries end

	e.progress("fcm answers 503 for %d devices; committing ~%d pushes over %s", moving, deliveries/2, over/2)
	load.run(ctx, chaosComments(deliveries/2), over/2, 3)
	waited, err := e.waitFor(ctx, 30*time.Second, "a delivery waiting for a retry on every device about to move",
		func(ctx context.Context) (bool, error) {
			var n int
			err := e.admin.QueryRow(ctx, `SELECT count(DISTINCT token) FROM herald_deliveries
				WHERE token = ANY($1) AND status IN ('pending', 'claimed', 'retry_scheduled')`, tokens).Scan(&n)
			return n == len(tokens), err
		})
	if err != nil {
		return nil, err
	}
	var waiting int
	if err := e.admin.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries
		WHERE token = ANY($1) AND status IN ('pending', 'claimed', 'retry_scheduled')`, tokens).Scan(&waiting); err != nil {
		return nil, err
	}

	movedAt := map[string]time.Time{}
	for i, tok := range tokens {
		movedAt[tok] = time.Now()
		if err := h.Tokens().Register(ctx, fmt.Sprintf("new-owner-%02d", i), tok, notification.PlatformAndroid); err != nil {
			return nil, fmt.Errorf("move token %d: %w", i, err)
		}
	}
	e.progress("%d devices moved to new owners after %s, %d of their deliveries waiting; the fault clears in a moment",
		moving, waited.Round(time.Millisecond), waiting)
	// The fault outlasts every push already under way when the tokens
	// moved (SendTimeout bounds each): only pushes started after the move
	// can reach the devices.
	cli.Sleep(ctx, s.tuning.SendTimeout+500*time.Millisecond)
	e.fake.ClearFaults()
	load.run(ctx, chaosComments(deliveries/2), over/2, 3)
	if err := s.finish(ctx, 0); err != nil {
		return nil, err
	}

	misdirected, err := e.misdirected(ctx, owner, movedAt)
	if err != nil {
		return nil, err
	}
	ends := map[notification.DeliveryStatus]int{}
	rows, err := e.admin.Query(ctx, `SELECT status, count(*) FROM herald_deliveries WHERE token = ANY($1) GROUP BY status`, tokens)
	if err != nil {
		return nil, err
	}
	var st string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&st, &n}, func() error {
		ends[notification.DeliveryStatus(st)] = n
		return nil
	}); err != nil {
		return nil, err
	}
	res.set("tokens_moved", moving)
	res.set("deliveries_waiting_at_move", waiting)
	res.set("moved_tokens_deliveries", chaosStatusCounts(ends))
	res.set("pushes_to_moved_tokens", len(e.pushes.pushesToWatched()))
	res.set("misdirected_pushes", misdirected)
	res.check(waiting > 0, "no delivery waited for a retry when the tokens moved")
	res.check(misdirected == 0, "%d pushes for a previous owner reached a device that had moved to another user", misdirected)
	return res, nil
}

// misdirected counts the pushes accepted for a watched token after it moved
// whose comment notified its previous owner.
func (e *chaosEnv) misdirected(ctx context.Context, owner map[string]string, movedAt map[string]time.Time) (int, error) {
	pushes := e.pushes.pushesToWatched()
	comments := make([]string, 0, len(pushes))
	for _, p := range pushes {
		comments = append(comments, p.comment)
	}
	rows, err := e.admin.Query(ctx, `SELECT id, author_id FROM chaos_comments WHERE id = ANY($1)`, comments)
	if err != nil {
		return 0, fmt.Errorf("read the comments' authors: %w", err)
	}
	author := map[string]string{}
	var id, a string
	if _, err := pgx.ForEachRow(rows, []any{&id, &a}, func() error {
		author[id] = a
		return nil
	}); err != nil {
		return 0, fmt.Errorf("read the comments' authors: %w", err)
	}
	n := 0
	for _, p := range pushes {
		if moved, ok := movedAt[p.token]; ok && !p.at.Before(moved) && author[p.comment] == owner[p.token] {
			n++
		}
	}
	return n, nil
}
