package chaos

import (
	"context"
	"fmt"
	"time"
)

// chaosQuietAuthors is how many authors a scenario puts in quiet hours.
const chaosQuietAuthors = 5

// quietAuthors puts the first n authors in quiet hours (UTC) from a minute
// ago until about d from now, by the database's clock, which decides what
// is due; it returns the window's end and those authors' tokens. Their
// pushes are created due at that end and must arrive after it, never
// before, and none may be lost.
func (e *chaosEnv) quietAuthors(ctx context.Context, n int, d time.Duration) (until time.Time, tokens []string, err error) {
	var now time.Time
	if err := e.admin.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
		return time.Time{}, nil, fmt.Errorf("read the database's clock: %w", err)
	}
	now = now.UTC()
	until = now.Add(d).Truncate(time.Second).Add(time.Second)
	start := now.Add(-time.Minute)
	for a := range n {
		author := chaosAuthor(a)
		if _, err := e.admin.Exec(ctx, `INSERT INTO herald_preferences (user_id, quiet_start, quiet_end, time_zone, updated_at)
			VALUES ($1, $2::time, $3::time, 'UTC', now())`, author, start.Format("15:04:05"), until.Format("15:04:05")); err != nil {
			return time.Time{}, nil, fmt.Errorf("set quiet hours: %w", err)
		}
		for d := range chaosTokensPerAuthor {
			tokens = append(tokens, fmt.Sprintf("%s-device-%d", author, d))
		}
	}
	return until, tokens, nil
}

// checkQuiet reports the pushes to the quiet authors' tokens, and fails
// the result if one arrived before the window's end.
func (e *chaosEnv) checkQuiet(res *chaosResult, until time.Time) {
	pushes := e.pushes.pushesToWatched()
	early := 0
	for _, p := range pushes {
		if p.at.Before(until) {
			early++
		}
	}
	res.set("quiet_hour_pushes", len(pushes))
	res.set("quiet_hour_pushes_early", early)
	res.check(len(pushes) > 0, "no push to the authors in quiet hours arrived")
	res.check(early == 0, "%d pushes to authors in quiet hours arrived before the window ended", early)
}
