package adapters

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-push/herald/internal/telemetry"
)

// gaugeStatuses are the statuses the delivery gauges show: the open ones,
// which the partial due index covers, and failed, which its own partial
// index covers. Sent and the other final statuses grow without bound and
// would cost a scan of the table; they are not shown.
var gaugeStatuses = []string{"pending", "retry_scheduled", "claimed", "failed"}

// Gauges reads what the database-wide metrics show, in one statement that
// uses only partial indexes: deliveries by open status and failed, how long
// the oldest due delivery has been due (by the database's clock), and the
// dead letters not replayed.
func (r *PostgresDeliveryRepository) Gauges(ctx context.Context) (telemetry.DatabaseSnapshot, error) {
	snap := telemetry.DatabaseSnapshot{Deliveries: make(map[string]int64, len(gaugeStatuses))}
	for _, s := range gaugeStatuses {
		snap.Deliveries[s] = 0
	}
	var oldest float64
	rows, err := r.db.Query(ctx, `
		SELECT status, count(*), 0::float8 FROM herald_deliveries
			WHERE status IN ('pending', 'retry_scheduled', 'claimed') GROUP BY status
		UNION ALL
		SELECT 'failed', count(*), 0 FROM herald_deliveries WHERE status = 'failed'
		UNION ALL
		SELECT 'oldest_due', 0, coalesce(extract(epoch FROM now() - min(due_at)), 0)::float8 FROM herald_deliveries
			WHERE status IN ('pending', 'retry_scheduled', 'claimed') AND due_at <= now()
		UNION ALL
		SELECT 'dead_letters', count(*), 0 FROM herald_dead_letters WHERE replayed_at IS NULL`)
	if err != nil {
		return snap, fmt.Errorf("read delivery gauges: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			key string
			n   int64
			f   float64
		)
		if err := rows.Scan(&key, &n, &f); err != nil {
			return snap, fmt.Errorf("read delivery gauges: %w", err)
		}
		switch key {
		case "oldest_due":
			oldest = f
		case "dead_letters":
			snap.DeadLetters = n
		default:
			snap.Deliveries[key] = n
		}
	}
	if err := rows.Err(); err != nil {
		return snap, fmt.Errorf("read delivery gauges: %w", err)
	}
	snap.OldestDueAge = time.Duration(oldest * float64(time.Second))
	return snap, nil
}
