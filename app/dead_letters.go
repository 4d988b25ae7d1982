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
	// Payload is the message's payload; in a listing, only its first
	// ListedPayloadBytes (a dead letter may keep a malformed message of up
	// to MaxOutboxMessageBytes whole, and a page lists a hundred).
	Payload []byte
	// PayloadBytes is the whole payload's size, set by a listing.
	PayloadBytes int
	Metadata     map[string]string
	Reason       string
	CreatedAt    time.Time
	ReplayedAt   time.Time
}

// ListedPayloadBytes is how much of each dead letter's payload a listing
// reads: enough to see what the message was, however large it is.
// Replaying reads the whole payload.
const ListedPayloadBytes = 64 << 10

// DeadLetterReplayStore takes dead letters for replay, in the transaction
// that republishes them.
type DeadLetterReplayStore interface {
	// TakeForReplay locks up to limit not yet replayed dead letters with
	// ids above after, among the given ids (every one when ids is empty),
	// in id order, marks them replayed at now, and returns them. It may
	// return fewer than limit while more remain (it bounds the payload
	// bytes it returns): callers take until it returns none.
	TakeForReplay(ctx context.Context, ids []int64, after int64, limit int, now time.Time) ([]DeadLetter, error)
	// Untake marks the dead letters with the given ids not replayed again:
	// those taken that cannot be replayed.
	Untake(ctx context.Context, ids []int64) error
}
