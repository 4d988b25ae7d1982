// Package backlog reads, from Herald's own tables, whether Herald has work
// left: what `herald chaos` and testutil.WaitIdle wait for.
package backlog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Idle reports whether Herald has nothing left to do in pool's database:
// the relay has consumed every committed outbox message, every broadcast
// (and continuation of a recipient's many devices) is expanded, and no
// delivery is open (pending, claimed or retry scheduled). A broadcast the
// relay has written is work left until its last chunk: between the two, or
// while it is held (see the broadcast expander), it has no open delivery
// yet, and a test asserting then missed every push of it. A committed message the relay
// cannot read yet, because an older transaction anywhere in the cluster is
// still open, is work left: Idle is not true until it is relayed.
func Idle(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	return IdleExceptToken(ctx, pool, "")
}

// IdleExceptToken is Idle, save that the open deliveries to token do not
// count: `herald chaos` holds one device back while the rest drains. An
// empty token holds back nothing: that is Idle.
func IdleExceptToken(ctx context.Context, pool *pgxpool.Pool, token string) (bool, error) {
	var idle bool
	err := pool.QueryRow(ctx, `
		SELECT NOT EXISTS (
			-- The relay's position first, so that the comparison seeks
			-- the outbox's primary key rather than reading every consumed
			-- row housekeeping keeps; '0' (no position) is below every row.
			SELECT 1 FROM watermill_herald_outbox m
			WHERE (m.transaction_id, m."offset") > (
				coalesce((SELECT last_processed_transaction_id FROM watermill_offsets_herald_outbox
					WHERE consumer_group = 'herald_relay'), '0'::xid8),
				(SELECT offset_acked FROM watermill_offsets_herald_outbox WHERE consumer_group = 'herald_relay'))
		) AND NOT EXISTS (
			SELECT 1 FROM herald_deliveries WHERE status IN ('pending', 'claimed', 'retry_scheduled')
			  AND ($1 = '' OR token <> $1)
		) AND NOT EXISTS (
			-- Through the partial index on unfinished broadcasts.
			SELECT 1 FROM herald_broadcasts WHERE finished_at IS NULL
		)`, token).Scan(&idle)
	if err != nil {
		return false, fmt.Errorf("check whether herald is idle: %w", err)
	}
	return idle, nil
}
