package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/app"
)

// replayBatch is how many dead letters one replay transaction takes.
const replayBatch = 500

// ReplayDeadLetters puts dead-lettered messages back on the outbox topic,
// for example after deploying the rule for an event type the relay did not
// know. It replays those with the given ids, or every one not yet replayed
// when ids is empty, and returns how many it replayed. It works in batches
// of replayBatch (and at most app.MaxOutboxMessageBytes of payloads), each
// in one transaction that republishes and marks, so
// each dead letter is replayed once however often this runs; a message that
// fails again is dead-lettered again as a new entry. A dead letter whose
// payload is not a JSON object (what was in the outbox was not a Herald
// message: a NULL or garbage row) cannot be replayed: it is skipped, stays
// not replayed, and does not stop the others. deadLettersIn makes the dead
// letter store on a replay's transaction (adapters.DeadLettersIn).
func ReplayDeadLetters(ctx context.Context, pool *pgxpool.Pool, deadLettersIn func(pgx.Tx) app.DeadLetterReplayStore, ids []int64) (int, error) {
	replayed := 0
	var after int64
	for {
		var taken int
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			store := deadLettersIn(tx)
			dls, err := store.TakeForReplay(ctx, ids, after, replayBatch, time.Now())
			if err != nil {
				return err
			}
			taken = len(dls)
			if taken == 0 {
				return nil
			}
			after = dls[taken-1].ID
			var payloads [][]byte
			var from []int64
			var unreplayable []int64
			for _, dl := range dls {
				if !replayable(dl.Payload) {
					unreplayable = append(unreplayable, dl.ID)
					continue
				}
				payloads = append(payloads, dl.Payload)
				from = append(from, dl.ID)
			}
			if len(unreplayable) > 0 {
				if err := store.Untake(ctx, unreplayable); err != nil {
					return err
				}
			}
			if len(payloads) == 0 {
				return nil
			}
			msgs, err := newMessages(payloads)
			if err != nil {
				return err
			}
			for i, id := range from {
				msgs[i].Metadata.Set("herald_replay_of", fmt.Sprint(id))
			}
			if err := publish(tx, watermill.NewSlogLogger(slog.New(slog.DiscardHandler)), msgs); err != nil {
				return err
			}
			replayed += len(msgs)
			return nil
		})
		if err != nil {
			return replayed, fmt.Errorf("replay dead letters: %w", err)
		}
		if taken == 0 { // a batch may be short of replayBatch by its bytes
			return replayed, nil
		}
	}
}

// replayable reports whether a dead letter's payload can go back on the
// topic: the outbox's payload column takes only JSON, and the relay reads
// only objects.
func replayable(payload []byte) bool {
	p := bytes.TrimSpace(payload)
	return len(p) > 0 && p[0] == '{' && utf8.Valid(p) && json.Valid(p)
}
