package demo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/notification"
)

// Timing of the demo. Herald's production defaults are minutes and tens of
// seconds; these shrink them so that retries, the breaker and Retry-After
// show within seconds.
const (
	demoRetryBaseDelay = 300 * time.Millisecond
	demoRetryMaxDelay  = 2 * time.Second
	demoBreakerOpenFor = time.Second
	demoSendTimeout    = 2 * time.Second
	demoOutage         = 3 * time.Second
	demoQuotaRetry     = time.Second
	// demoSettleWithin bounds each wait for deliveries to become final.
	demoSettleWithin = 30 * time.Second
)

// Run is `herald demo`: a course-and-comments host application raises
// CommentCreated events in its own transactions while Herald relays and
// sends them, through a dead token, a flaky token, an FCM outage and a
// throttled token, and then accounts for every push. It fails if a push for
// a committed comment was lost or a rolled-back comment sent anything, so
// it doubles as a smoke test.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	verbose := fs.Bool("v", false, "log at info level on stderr (default: warnings and errors only)")
	latency := fs.Duration("latency", 20*time.Millisecond, "latency the fake FCM adds to every request")
	realToken := fs.String("token", "", "with real FCM: a real device's registration token, registered as one of alice's devices")
	consoleAddr := fs.String("console", "", "serve the operator console on this address (for example :8080, this machine only; 0.0.0.0:8080 for the network) during the demo and after it, until interrupted")
	if err := fs.Parse(args); err != nil {
		return cli.UsageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return cli.UsageError{Msg: "demo takes no arguments"}
	}
	if *latency < 0 {
		return cli.UsageError{Msg: "-latency must not be negative"}
	}
	if *realToken != "" && !realFCMConfigured() {
		return cli.UsageError{Msg: "-token needs real FCM (GOOGLE_APPLICATION_CREDENTIALS or HERALD_FCM=real)"}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	var oc *operatorConsole
	if *consoleAddr != "" {
		var err error
		if oc, err = listenOperatorConsole(*consoleAddr); err != nil {
			return err
		}
		defer oc.Close()
	}

	out := newDemoConsole(stdout)
	out.printf("herald demo: a course-and-comments app raising notifications in its own transactions\n")
	began := time.Now()
	env, err := openEnvironment(ctx, envOptions{FakeFCM: fakefcm.Config{Latency: *latency}, Log: log})
	if err != nil {
		return err
	}
	defer env.Close()
	if env.Fake == nil && *realToken == "" {
		log.Warn("real fcm without -token: every demo token is invented, so fcm rejects it and herald prunes it")
	}

	d := newDemo(out, env, *realToken)
	d.console = oc
	out.printf("  ready in  %.2fs\n", time.Since(began).Seconds())
	out.printf("  database  %s\n", d.describeDatabase())
	out.printf("  fcm       %s\n", d.describeFCM(*latency))
	out.restartClock()
	err = d.run(ctx, demoConfig(log))
	if oc != nil && ctx.Err() == nil {
		err = errors.Join(err, d.keepServing(ctx))
	}
	if ctx.Err() != nil {
		out.event("stop", "interrupted: Herald stopped cleanly; the demo ends here")
	}
	return err
}

// demoConfig is Herald's configuration for the demo: production behaviour
// with every delay shortened.
func demoConfig(log *slog.Logger) herald.Config {
	return herald.Config{
		Logger: log,
		Sender: herald.SenderConfig{
			PollInterval:     100 * time.Millisecond,
			Lease:            10 * time.Second,
			Retry:            notification.RetryPolicy{MaxAttempts: 12, BaseDelay: demoRetryBaseDelay, MaxDelay: demoRetryMaxDelay},
			CircuitOpenPause: 500 * time.Millisecond,
		},
		FCM: herald.FCMConfig{
			SendTimeout:     demoSendTimeout,
			BreakerFailures: 5,
			BreakerOpenFor:  demoBreakerOpenFor,
			BreakerProbes:   3,
		},
	}
}

func (d *demo) describeDatabase() string {
	if d.env.Cluster != nil {
		return fmt.Sprintf("throwaway Postgres on 127.0.0.1:%d (removed at exit), Herald's migrations applied", d.env.Cluster.Port())
	}
	return "DATABASE_URL, Herald's migrations applied; the demo's rows are prefixed " + strings.TrimSuffix(d.ns, "-")
}

func (d *demo) describeFCM(latency time.Duration) string {
	if d.fake != nil {
		return fmt.Sprintf("in-process fake FCM at %s (HTTP v1 API, %s latency), through the firebase SDK", d.fake.URL(), latency)
	}
	project := os.Getenv("FIREBASE_PROJECT_ID")
	if project == "" {
		project = "named by the credentials"
	}
	return "real FCM, project " + project + ": faults cannot be injected, so the fault steps are skipped"
}

// run plays the scenario and prints the summary. It returns an error if
// the scenario could not run, or if the accounting found a lost push or a
// push for a rolled-back comment.
func (d *demo) run(ctx context.Context, cfg herald.Config) (err error) {
	d.cfg = cfg
	if err := d.newHerald(cfg); err != nil {
		return err
	}
	if err := d.setUp(ctx); err != nil {
		return err
	}
	d.start(ctx)
	defer func() {
		// Stops Herald if a step failed; after a normal run it is already stopped.
		if stopErr := d.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()

	var problems []error
	for _, step := range []func(context.Context) error{d.everyday, d.outage, d.throttling} {
		if err := step(ctx); err != nil {
			if ctx.Err() != nil || errors.Is(err, errDemoHeraldStopped) {
				return err
			}
			var notSettled *demoNotSettledError
			if !errors.As(err, &notSettled) {
				return err
			}
			d.out.event("timeout", "%v", err)
			problems = append(problems, err)
		}
	}

	featureProblems, err := d.features(ctx)
	if err != nil {
		var notSettled *demoNotSettledError
		if ctx.Err() != nil || !errors.As(err, &notSettled) {
			return err
		}
		d.out.event("timeout", "%v", err)
		featureProblems = append(featureProblems, err)
	}
	problems = append(problems, featureProblems...)

	preferenceProblems, err := d.preferences(ctx)
	if err != nil {
		var notSettled *demoNotSettledError
		if ctx.Err() != nil || !errors.As(err, &notSettled) {
			return err
		}
		d.out.event("timeout", "%v", err)
		preferenceProblems = append(preferenceProblems, err)
	}
	problems = append(problems, preferenceProblems...)

	d.out.section("every delivery final")
	if _, err := d.settle(ctx, demoSettleWithin); err != nil {
		if ctx.Err() != nil {
			return err
		}
		problems = append(problems, err)
	}
	counts, err := d.deliveryCounts(ctx)
	if err != nil {
		return err
	}
	d.out.event("final", "deliveries: %s", demoDescribeCounts(counts))
	if err := d.stop(); err != nil {
		return err
	}
	d.out.event("stop", "herald stopped: relay and sender returned, no push in flight")

	if err := d.showInbox(ctx, d.user("alice")); err != nil {
		return err
	}
	s, err := d.account(ctx)
	if err != nil {
		return err
	}
	d.printSummary(s)
	problems = append(problems, s.problems()...)
	if len(problems) > 0 {
		return fmt.Errorf("demo failed: %w", errors.Join(problems...))
	}
	return nil
}
