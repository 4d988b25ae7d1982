package adapters_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

func TestAnyDeadLetterIsStored(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		dl   adapters.DeadLetter
	}{
		{"reason cut in the middle of a multi-byte character", adapters.DeadLetter{Payload: []byte(`{}`), Reason: strings.Repeat("€", 1000)}},
		{"reason with NUL and invalid UTF-8", adapters.DeadLetter{Payload: []byte(`{}`), Reason: "bad\x00byte\xff"}},
		{"no payload at all", adapters.DeadLetter{Payload: nil, Reason: "payload is NULL"}},
		{"metadata with NUL", adapters.DeadLetter{Payload: []byte(`{}`), Metadata: map[string]string{"k\x00": "v\x00\xfe"}, Reason: "r"}},
	}
	pool := testutil.NewPool(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			c.dl.Topic, c.dl.MessageUUID, c.dl.CreatedAt = "herald_outbox", "m-1", time.Now()
			id, err := adapters.NewPostgresDeadLetterRepository(pool).Add(ctx, c.dl)
			require.NoError(t, err)
			var reason string
			require.NoError(t, pool.QueryRow(ctx, `SELECT reason FROM herald_dead_letters WHERE id = $1`, id).Scan(&reason))
			assert.True(t, utf8.ValidString(reason))
			assert.LessOrEqual(t, len(reason), 2000)
			assert.True(t, strings.HasPrefix(c.dl.Reason, reason) || strings.ContainsRune(reason, utf8.RuneError))
		})
	}
}
