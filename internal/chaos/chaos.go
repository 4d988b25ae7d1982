package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/herald-push/herald/internal/cli"
)

// chaosScenario is one fault-injection scenario of `herald chaos`.
type chaosScenario struct {
	name string
	// promise is what the scenario proves, for the usage text.
	promise string
	run     func(ctx context.Context, e *chaosEnv) (*chaosResult, error)
}

// chaosScenarios lists the scenarios in the order `herald chaos` runs them.
var chaosScenarios = []chaosScenario{
	{"sigkill", "the process running the relay and sender is SIGKILLed again and again: nothing is lost, duplicates stay bounded", runChaosSigkill},
	{"postgres-restart", "Postgres restarts in immediate mode mid-run: Herald reconnects by itself and loses nothing", runChaosPostgresRestart},
	{"fcm-outage", "FCM answers UNAVAILABLE for a while (128 in flight, SDK retries on): the breaker opens within 1 s, at most 50 requests reach FCM, all is delivered after", runChaosFCMOutage},
	{"fcm-hang", "FCM stops answering: timeouts open the breaker, goroutines and heap stay bounded, all is delivered after", runChaosFCMHang},
	{"quota-storm", "a storm of project-wide 429 QUOTA_EXCEEDED with Retry-After: once seen on several devices, no request before Retry-After; throughput recovers", runChaosQuotaStorm},
	{"long-transaction", "a host transaction stays open: Herald warns and reports its age; all is delivered once it ends", runChaosLongTransaction},
	{"connection-cut", "host and Herald connections are terminated mid-transaction: no partial state, nothing lost", runChaosConnectionCut},
	{"poison", "overlong tokens, a 100,000-token recipient, an unencodable event and junk outbox rows mid-run: each refused, skipped or dead-lettered; no relay stall, nothing lost", runChaosPoison},
	{"token-moves", "tokens change owner while their deliveries wait for a retry: no push for the previous owner reaches them", runChaosTokenMoves},
	{"credentials-blip", "FCM rejects our credentials (UNAUTHENTICATED) for a moment: nothing fails, nothing is lost", runChaosCredentialsBlip},
	{"hot-device", "one device is throttled (QUOTA_EXCEEDED): the other devices keep full speed, nothing is lost", runChaosHotDevice},
	{"db-down-at-start", "Herald starts while Postgres is down: it waits instead of exiting and delivers everything", runChaosDBDownAtStart},
	{"clock-skew", "two Herald processes, one clock 30 s ahead: no duplicates, nothing lost", runChaosClockSkew},
	{"replicas", "three Herald processes under one fleet rate limit, one SIGKILLed and restarted, another's connections cut: nothing lost, duplicates bounded, the fleet's busiest second within 5 % of the limit", runChaosReplicas},
}

// chaosOptions are the flags of `herald chaos`.
type chaosOptions struct {
	short      bool
	seed       int64
	verbose    bool
	deliveries int           // 0: the scenario's own size
	outage     time.Duration // 0: the scenario's own length
	stderr     io.Writer     // safe for concurrent use
}

// size returns short in the short form and long otherwise.
func chaosSize[T any](o chaosOptions, short, long T) T {
	if o.short {
		return short
	}
	return long
}

// Run is `herald chaos [scenario...] [-short] [flags]`: it runs the
// scenarios one after another, each on its own throwaway Postgres and
// in-process fake FCM, prints one JSON line per scenario on stdout and
// progress on stderr, and fails if any scenario is not ok.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts chaosOptions
	fs.BoolVar(&opts.short, "short", false, "the short form: about 2,000 deliveries per scenario and outages of seconds (what the tests run)")
	fs.Int64Var(&opts.seed, "seed", 0, "seed of the random kill and cut moments (default: from the clock)")
	fs.BoolVar(&opts.verbose, "v", false, "Herald logs at info level on stderr (default: warnings and errors)")
	fs.IntVar(&opts.deliveries, "deliveries", 0, "pushes each scenario commits (default: 2,000 short, 20,000 long)")
	fs.DurationVar(&opts.outage, "outage", 0, "length of FCM outages, hangs and the long transaction (default: per scenario)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: herald chaos [scenario...] [-short] [flags]")
		fmt.Fprintln(stderr, "\nscenarios (default: all, in this order):")
		for _, sc := range chaosScenarios {
			fmt.Fprintf(stderr, "  %-17s %s\n", sc.name, sc.promise)
		}
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nEach scenario prints one JSON line on stdout; the command fails if any is not ok.")
	}
	names, err := chaosParseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return cli.UsageError{Msg: err.Error()}
	}
	if opts.deliveries < 0 || opts.outage < 0 {
		return cli.UsageError{Msg: "-deliveries and -outage must not be negative"}
	}
	selected, err := selectChaosScenarios(names)
	if err != nil {
		fs.Usage()
		return cli.UsageError{Msg: err.Error()}
	}
	if opts.seed == 0 {
		opts.seed = time.Now().UnixNano()
	}
	opts.stderr = &cli.LockedWriter{W: stderr}
	fmt.Fprintf(opts.stderr, "herald chaos: %d scenario(s), %s form, seed %d\n",
		len(selected), chaosSize(opts, "short", "long"), opts.seed)

	var failed []string
	for i, sc := range selected {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res := runChaosScenario(ctx, sc, opts, opts.seed+int64(i))
		line, err := json.Marshal(res)
		if err != nil {
			return fmt.Errorf("encode result of %s: %w", sc.name, err)
		}
		if _, err := fmt.Fprintln(stdout, string(line)); err != nil {
			return err
		}
		if !res.OK {
			failed = append(failed, sc.name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("chaos: %d of %d scenario(s) not ok: %s", len(failed), len(selected), strings.Join(failed, ", "))
	}
	return nil
}

// runChaosScenario runs one scenario on a fresh environment and always
// returns a result: a scenario that could not run is not ok.
func runChaosScenario(ctx context.Context, sc chaosScenario, opts chaosOptions, seed int64) *chaosResult {
	began := time.Now()
	fail := func(err error) *chaosResult {
		res := &chaosResult{Scenario: sc.name}
		res.check(false, "%v", err)
		res.Seconds = chaosSeconds(time.Since(began))
		return res
	}
	e, err := openChaosEnv(ctx, sc.name, opts, seed)
	if err != nil {
		return fail(err)
	}
	defer e.close()
	e.progress("environment ready: postgres migrated, fake fcm at %s", e.fake.URL())
	res, err := sc.run(ctx, e)
	if err != nil {
		return fail(err)
	}
	res.Scenario = sc.name
	res.Seconds = chaosSeconds(time.Since(began))
	res.OK = len(res.failures) == 0
	verdict := "ok"
	if !res.OK {
		verdict = "NOT OK: " + strings.Join(res.failures, "; ")
	}
	e.progress("done in %.1fs: %s", res.Seconds, verdict)
	return res
}

func selectChaosScenarios(names []string) ([]chaosScenario, error) {
	if len(names) == 0 {
		return chaosScenarios, nil
	}
	var selected []chaosScenario
	for _, name := range names {
		found := false
		for _, sc := range chaosScenarios {
			if sc.name == name {
				selected = append(selected, sc)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown chaos scenario %q", name)
		}
	}
	return selected, nil
}

// chaosParseArgs parses flags placed before, between or after the
// positional arguments, and returns the positional ones.
func chaosParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// chaosResult is the JSON line a scenario prints: the accounting every
// scenario shares, then its own fields, then why it is not ok.
type chaosResult struct {
	Scenario         string  `json:"scenario"`
	CommittedEvents  int     `json:"committed_events"`
	RolledBackEvents int     `json:"rolled_back_events"`
	ExpectedPushes   int     `json:"expected_pushes"`
	Received         int64   `json:"received"`
	Lost             int     `json:"lost"`
	Duplicates       int     `json:"duplicates"`
	DuplicatesBound  int     `json:"duplicates_bound"`
	Crashes          int     `json:"crashes"`
	Restarts         int     `json:"restarts"`
	Seconds          float64 `json:"seconds"`
	OK               bool    `json:"ok"`

	extra    []chaosField
	failures []string
}

type chaosField struct {
	key   string
	value any
}

// set adds a scenario-specific field, printed after the shared ones in
// the order set.
func (r *chaosResult) set(key string, value any) {
	for i := range r.extra {
		if r.extra[i].key == key {
			r.extra[i].value = value
			return
		}
	}
	r.extra = append(r.extra, chaosField{key, value})
}

// check records a failure unless cond holds.
func (r *chaosResult) check(cond bool, format string, args ...any) {
	if !cond {
		r.failures = append(r.failures, fmt.Sprintf(format, args...))
	}
}

// MarshalJSON writes the shared fields, the scenario's fields and, when not
// ok, "reason".
func (r *chaosResult) MarshalJSON() ([]byte, error) {
	type shared chaosResult // no methods: no recursion
	b, err := json.Marshal((*shared)(r))
	if err != nil {
		return nil, err
	}
	var sb strings.Builder
	sb.Write(b[:len(b)-1])
	fields := r.extra
	if len(r.failures) > 0 {
		fields = append(fields[:len(fields):len(fields)], chaosField{"reason", strings.Join(r.failures, "; ")})
	}
	for _, f := range fields {
		k, err := json.Marshal(f.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(f.value)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", f.key, err)
		}
		sb.WriteByte(',')
		sb.Write(k)
		sb.WriteByte(':')
		sb.Write(v)
	}
	sb.WriteByte('}')
	return []byte(sb.String()), nil
}

func chaosSeconds(d time.Duration) float64 {
	return float64(d.Round(10*time.Millisecond)) / float64(time.Second)
}
