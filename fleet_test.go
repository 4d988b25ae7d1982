package herald_test

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
)

func TestRunningHeraldsListThemselvesAndOneLeads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := fastConfig()
	cfg.Fleet = herald.FleetConfig{HeartbeatInterval: 100 * time.Millisecond, DeadAfter: 500 * time.Millisecond}
	h := newHarness(t, cfg)
	second, err := herald.New(h.pool, nil, notification.NewRules(), cfg)
	require.NoError(t, err)
	list, err := second.Instances(ctx)
	require.NoError(t, err)
	assert.Empty(t, list, "nothing runs yet")

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		assert.NoError(t, h.herald.Run(runCtx))
	}()
	t.Cleanup(func() { stop(); wg.Wait() })
	require.Eventually(t, func() bool {
		list, err = second.Instances(ctx)
		return err == nil && len(list) == 1 && list[0].Leader
	}, 10*time.Second, 20*time.Millisecond, "a running Herald registers and, alone, leads")
	host, _ := os.Hostname()
	assert.Equal(t, host, list[0].Host)
	assert.Equal(t, os.Getpid(), list[0].PID)
	assert.NotEmpty(t, list[0].Version)
	assert.False(t, list[0].HeartbeatAt.Before(list[0].StartedAt))

	s, err := second.Status(ctx)
	require.NoError(t, err)
	require.Len(t, s.Instances, 1, "Status shows the fleet")
	raw, err := json.Marshal(s)
	require.NoError(t, err)
	var j struct {
		Instances []map[string]any `json:"instances"`
	}
	require.NoError(t, json.Unmarshal(raw, &j))
	require.Len(t, j.Instances, 1)
	assert.Equal(t, true, j.Instances[0]["leader"])
	assert.Contains(t, j.Instances[0], "heartbeat_age")

	stop()
	wg.Wait()
	list, err = second.Instances(ctx)
	require.NoError(t, err)
	assert.Empty(t, list, "a Herald that stops leaves the list at once")
}

// A project-wide QUOTA_EXCEEDED pauses every instance through the
// database; an operator sees that pause, and how long it still lasts, in
// Status (and so in `herald status` and the console), and sees it gone
// once lifted.
func TestStatusShowsTheFleetsQuotaPauseUntilItEnds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	s, err := h.herald.Status(ctx)
	require.NoError(t, err)
	assert.Zero(t, s.QuotaPause, "no pause holds on a fresh database")

	// What an instance writes when it decides a 429 is project-wide.
	_, err = h.pool.Exec(ctx, `UPDATE herald_send_budget SET paused_until = now() + interval '30 seconds'`)
	require.NoError(t, err)
	s, err = h.herald.Status(ctx)
	require.NoError(t, err)
	assert.Greater(t, s.QuotaPause, 25*time.Second)
	assert.LessOrEqual(t, s.QuotaPause, 30*time.Second)
	raw, err := json.Marshal(s)
	require.NoError(t, err)
	var j struct {
		QuotaPause string `json:"quota_pause"`
	}
	require.NoError(t, json.Unmarshal(raw, &j))
	d, err := time.ParseDuration(j.QuotaPause)
	require.NoError(t, err)
	assert.Greater(t, d, 25*time.Second)

	// The README's way to lift it.
	_, err = h.pool.Exec(ctx, `UPDATE herald_send_budget SET paused_until = 'epoch'`)
	require.NoError(t, err)
	s, err = h.herald.Status(ctx)
	require.NoError(t, err)
	assert.Zero(t, s.QuotaPause)
}
