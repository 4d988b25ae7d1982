package app

import (
	"context"
	"time"
)

// DeadLetter is an outbox message, or one event of it, that the relay could
// not process, kept with the reason so an operator can inspect and replay it.
type DeadLetter struct {
	ID          int64
	Topic       string
	MessageUUID string
	Payload     []byte
	Metadata    map[string]string
	Reason      string
	CreatedAt   time.Time
	ReplayedAt  time.Time
}

// DeadLetterReplayStore takes dead letters for replay, in the transaction
// that republishes them.
type DeadLetterReplayStore interface {
	// TakeForReplay locks the not yet replayed dead letters with the given
	// ids (every one when ids is empty), marks them replayed at now, and
	// returns them.
	TakeForReplay(ctx context.Context, ids []int64, now time.Time) ([]DeadLetter, error)
}
