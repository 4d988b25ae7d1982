package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/notification"
)

// chaosFeature is a host event for issue 10's features under crashes: a
// notification scheduled for later (SendAt), or one of a burst sharing a
// collapse key. Its id travels as the push's comment_id, so the push
// counter sees its pushes; they are counted apart from the comments'.
type chaosFeature struct {
	UserID      string    `json:"user_id"`
	ID          string    `json:"id"`
	SendAt      time.Time `json:"send_at,omitzero"`
	CollapseKey string    `json:"collapse_key,omitempty"`
}

// EventType names the event in the outbox.
func (chaosFeature) EventType() string { return "chaos_feature" }

func notifyFeature(e chaosFeature) ([]notification.Draft, error) {
	return []notification.Draft{{Recipient: e.UserID, Type: "chaos_feature",
		Content: notification.Content{Title: "Feature", Body: e.ID, Data: map[string]string{"comment_id": e.ID}},
		SendAt:  e.SendAt, CollapseKey: e.CollapseKey}}, nil
}

// chaosFeatureLoad raises scheduled notifications and collapse bursts in
// the background while a scenario does harm.
type chaosFeatureLoad struct {
	load *chaosLoad
	done chan struct{}

	mu                    sync.Mutex
	scheduled, collapsing int
	failed                int
}

// startFeatureLoad raises, over the given time, a scheduled notification
// (due 0.5-3 s after its raise) or a burst of three to five notifications
// sharing a collapse key (one transaction each) every 100 ms, to the load's
// authors in turn.
func startFeatureLoad(ctx context.Context, e *chaosEnv, load *chaosLoad, over time.Duration) *chaosFeatureLoad {
	f := &chaosFeatureLoad{load: load, done: make(chan struct{})}
	rng := rand.New(rand.NewPCG(e.rng.Uint64(), 10))
	go func() {
		defer close(f.done)
		end := time.Now().Add(over)
		for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
			author := chaosAuthor((i * 7) % chaosAuthors)
			if i%2 == 0 {
				id := fmt.Sprintf("feature-sched-%05d", i)
				at := time.Now().Add(500*time.Millisecond + time.Duration(rng.Int64N(int64(2500*time.Millisecond))))
				f.raise(ctx, chaosFeature{UserID: author, ID: id, SendAt: at}, &f.scheduled)
			} else {
				key := fmt.Sprintf("burst-%05d", i)
				for j := range 3 + rng.IntN(3) {
					id := fmt.Sprintf("feature-%s-%d", key, j)
					f.raise(ctx, chaosFeature{UserID: author, ID: id, CollapseKey: key}, &f.collapsing)
					cli.Sleep(ctx, time.Duration(rng.Int64N(int64(30*time.Millisecond))))
				}
			}
			cli.Sleep(ctx, 100*time.Millisecond)
		}
	}()
	return f
}

func (f *chaosFeatureLoad) raise(ctx context.Context, ev chaosFeature, count *int) {
	f.load.sideComments(ev.ID)
	err := f.load.raiseSide(ctx, ev)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.failed++ // the database decides whether it committed
		return
	}
	*count++
}

// check compares what was committed with what the fake FCM received, once
// Herald is idle and stopped: every scheduled notification pushed to every
// device of its recipient, none before its send time; of each collapse
// key, the newest notification pushed to every device; every other
// delivery sent (pushed before a newer one came) or superseded, and no
// superseded delivery pushed, unless a killed process held its claim (its
// push may have been accepted and not recorded: see chaosCrashBound).
func (f *chaosFeatureLoad) check(ctx context.Context, e *chaosEnv, res *chaosResult, claimedAtKills map[int64]bool) error {
	<-f.done
	rows, err := e.admin.Query(ctx, `
		SELECT d.id, n.data->>'comment_id', d.token, d.status, n.send_at, coalesce(n.collapse_key, ''),
			n.id = (SELECT m.id FROM herald_notifications m WHERE m.recipient = n.recipient
				AND m.collapse_key = n.collapse_key ORDER BY m.created_at DESC, m.id DESC LIMIT 1)
		FROM herald_notifications n JOIN herald_deliveries d ON d.notification_id = n.id
		WHERE n.type = 'chaos_feature'`)
	if err != nil {
		return fmt.Errorf("list feature deliveries: %w", err)
	}
	var (
		id                                        int64
		key                                       chaosPushKey
		status, collapseKey                       string
		sendAt                                    *time.Time
		newest                                    *bool
		deliveries, early, lost, supersededPushed int
		superseded, supersededAfterKill           int
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &key.comment, &key.token, &status, &sendAt, &collapseKey, &newest}, func() error {
		deliveries++
		first, pushed := e.pushes.firstAt(key)
		switch notification.DeliveryStatus(status) {
		case notification.StatusSent:
			if !pushed {
				lost++
			}
		case notification.StatusSuperseded:
			superseded++
			switch {
			case newest != nil && *newest:
				lost++ // the newest of its key is never superseded
			case pushed && claimedAtKills[id]:
				supersededAfterKill++
			case pushed:
				supersededPushed++
			}
		default:
			lost++
		}
		if pushed && sendAt != nil && first.Before(*sendAt) {
			early++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list feature deliveries: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	res.set("feature_scheduled_raised", f.scheduled)
	res.set("feature_collapsing_raised", f.collapsing)
	res.set("feature_deliveries", deliveries)
	res.set("feature_superseded", superseded)
	res.set("feature_pushed_early", early)
	res.set("feature_lost", lost)
	res.set("feature_superseded_pushed", supersededPushed)
	res.set("feature_superseded_after_kill", supersededAfterKill)
	res.check(f.scheduled > 0 && f.collapsing > 0, "no scheduled or collapsing notification was raised")
	res.check(early == 0, "%d scheduled pushes went before their send time", early)
	res.check(lost == 0, "%d scheduled or collapsing deliveries were lost", lost)
	res.check(supersededPushed == 0, "%d superseded deliveries were pushed", supersededPushed)
	return nil
}

// claimedDeliveries returns the ids of the deliveries in seen.
func claimedDeliveries(seen map[chaosClaim]bool) map[int64]bool {
	ids := make(map[int64]bool, len(seen))
	for c := range seen {
		ids[c.delivery] = true
	}
	return ids
}
