package app_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// pacedStore records the size of each claim and counts the claim checks a
// sender makes before its pushes.
type pacedStore struct {
	*memStore
	mu       sync.Mutex
	claims   []int
	rechecks int
}

func (s *pacedStore) ClaimDue(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]app.Dispatch, error) {
	ds, err := s.memStore.ClaimDue(ctx, now, limit, lease)
	s.mu.Lock()
	if len(ds) > 0 {
		s.claims = append(s.claims, len(ds))
	}
	s.mu.Unlock()
	return ds, err
}

func (s *pacedStore) StillClaimed(ctx context.Context, d *notification.Delivery) (bool, error) {
	s.mu.Lock()
	s.rechecks++
	s.mu.Unlock()
	return s.memStore.StillClaimed(ctx, d)
}

// A sender held back by its rate limit (or, in a fleet, by its share of
// the budget) used to fill its queue with 500 deliveries it took half a
// second or more to push: each waited past the point where its claim must
// be checked again, one query per push. It now claims about what it
// pushes in a tenth of a second.
func TestASenderHeldBackByItsRateClaimsOnlyWhatItPushesSoonSoNoPushWaitsForARecheck(t *testing.T) {
	store := &pacedStore{memStore: newMemStore()}
	now := time.Now().Add(-time.Minute)
	const n = 1500
	for i := range n {
		store.add(fmt.Sprintf("paced-%d", i), notification.PlatformAndroid, now)
	}
	pusher := newFakePusher(func(notification.Message) error { return nil })
	runSender(t, store, pusher, app.SenderConfig{
		MaxInFlight:   8,
		RatePerMinute: 60_000, // 1,000 a second
		PollInterval:  5 * time.Millisecond,
		FlushInterval: 5 * time.Millisecond,
	})
	require.Eventually(t, func() bool {
		return store.statuses(func(string) bool { return true })[notification.StatusSent] == n
	}, waitFor, 10*time.Millisecond, "every delivery is sent")
	store.mu.Lock()
	defer store.mu.Unlock()
	assert.Zero(t, store.rechecks, "no push waited long enough for its claim to be checked again")
	for _, c := range store.claims {
		assert.LessOrEqual(t, c, 150, "a claim holds about a tenth of a second of pushes at 1,000/s, not a full queue: %v", store.claims)
	}
}
