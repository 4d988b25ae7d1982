package chaos

import (
	"context"
	"time"

	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/notification"
)

// runChaosCredentialsBlip makes FCM answer 401 UNAUTHENTICATED (our own
// credentials rejected, no FcmError detail) to everything for 1.5 s (5 s in
// the long form), as when an access token is rotated or an auth server
// blips. Such an answer is about the sender, not the message: deliveries
// must be released and retried, never failed. Nothing lost, nothing failed.
func runChaosCredentialsBlip(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	s, err := e.setupDefault(ctx)
	if err != nil {
		return nil, err
	}
	res, h := s.res, s.h
	run := chaosFaultRun{e: e, load: s.load, deliveries: e.deliveries(2_000, 20_000),
		fault: fakefcm.Fault{Code: fakefcm.FaultUnauthenticated}, lasts: e.outage(1500*time.Millisecond, 5*time.Second)}
	if err := run.before(ctx); err != nil {
		return nil, err
	}
	requestsDuring := run.during(ctx)
	run.after(ctx)
	if err := s.finish(ctx, 0); err != nil {
		return nil, err
	}
	failed := 0
	if t := s.load.tallied; t != nil {
		failed = t.notSent[notification.StatusFailed]
	}
	stats := h.Stats().Sender
	res.set("blip_seconds", run.lasts.Seconds())
	res.set("requests_during_blip", requestsDuring)
	res.set("deliveries_failed", failed)
	res.set("config_alarms", stats.ConfigAlarms)
	res.set("released", stats.Released)
	res.set("retries_scheduled", stats.RetriesScheduled)
	res.check(failed == 0, "%d deliveries failed because of a %s credentials blip (promise: none)", failed, run.lasts)
	return res, nil
}
