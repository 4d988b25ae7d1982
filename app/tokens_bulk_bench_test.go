package app_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// bulkRegistrations returns n registrations of distinct tokens of real
// length (about 170 bytes), one per user, for users user-<i>.
func bulkRegistrations(n int, userPrefix string) []app.TokenRegistration {
	regs := make([]app.TokenRegistration, n)
	for i := range regs {
		regs[i] = app.TokenRegistration{
			UserID:   fmt.Sprintf("%s-%d", userPrefix, i),
			Token:    fmt.Sprintf("cXkR2mXbQ0uY7pL4vN9aZ1:APA91bHk3Jd8sLq0Wm5Zx2Vb7Nc4TgHk3Jd8sLq0Wm5Zx2Vb7Nc4TgHk3Jd8sLq0Wm5Zx2Vb7Nc4TgHk3Jd8sLq0Wm5Zx2Vb7Nc4TgHk3Jd8sLq0Wm5Zx2Vb7Nc4Tg%09d", i),
			Platform: notification.PlatformAndroid,
		}
	}
	return regs
}

// BenchmarkRegisterMany imports 1,000,000 tokens into an empty registry on
// real Postgres (a fresh database per iteration), then imports them again
// (every token known), and reports tokens/s for each:
//
//	go test -run '^$' -bench BenchmarkRegisterMany -benchtime 1x ./app/
func BenchmarkRegisterMany(b *testing.B) {
	const n = 1_000_000
	regs := bulkRegistrations(n, "user")
	for _, tc := range []struct {
		name     string
		reimport bool
	}{{"new", false}, {"known", true}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			var elapsed time.Duration
			for range b.N {
				b.StopTimer()
				tokens := app.NewTokens(adapters.NewPostgresDeviceTokenRepository(testutil.NewPool(b)), nil)
				if tc.reimport {
					if err := tokens.RegisterMany(ctx, regs); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				start := time.Now()
				if err := tokens.RegisterMany(ctx, regs); err != nil {
					b.Fatal(err)
				}
				elapsed += time.Since(start)
			}
			b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "tokens/s")
		})
	}
}
