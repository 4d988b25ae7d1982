package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/app"
)

// ReplayDeadLetters puts dead-lettered messages back on the outbox topic,
// for example after deploying the rule for an event type the relay did not
// know. It replays those with the given ids, or every one not yet replayed
// when ids is empty, and returns how many it replayed. Republishing and
// marking happen in one transaction, so each dead letter is replayed once
// however often this runs; a message that fails again is dead-lettered
// again as a new entry. deadLettersIn makes the dead letter store on the
// replay's transaction (adapters.DeadLettersIn).
func ReplayDeadLetters(ctx context.Context, pool *pgxpool.Pool, deadLettersIn func(pgx.Tx) app.DeadLetterReplayStore, ids []int64) (int, error) {
	replayed := 0
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		dls, err := deadLettersIn(tx).TakeForReplay(ctx, ids, time.Now())
		if err != nil {
			return err
		}
		if len(dls) == 0 {
			return nil
		}
		payloads := make([][]byte, len(dls))
		for i, dl := range dls {
			payloads[i] = dl.Payload
		}
		msgs, err := newMessages(payloads)
		if err != nil {
			return err
		}
		for i, dl := range dls {
			msgs[i].Metadata.Set("herald_replay_of", fmt.Sprint(dl.ID))
		}
		replayed = len(msgs)
		return publish(tx, watermill.NewSlogLogger(slog.New(slog.DiscardHandler)), msgs)
	})
	if err != nil {
		return 0, fmt.Errorf("replay dead letters: %w", err)
	}
	return replayed, nil
}
