package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
)

// relayResult is `herald bench relay`'s line: how fast the relay alone
// turns a committed backlog into deliveries, with one device per user and
// with four.
type relayResult struct {
	Scenario        string       `json:"scenario"`
	Phases          []relayPhase `json:"phases"`
	TxSize          int          `json:"tx_size"`
	LoadAverage     float64      `json:"load_average"`
	GoVersion       string       `json:"go_version"`
	CPUs            int          `json:"cpus"`
	PostgresVersion string       `json:"postgres_version"`
}

// relayPhase is one backlog relayed.
type relayPhase struct {
	DevicesPerUser int `json:"devices_per_user"`
	Events         int `json:"events"`
	Deliveries     int `json:"deliveries"`
	// Seconds runs from the relay's start until it had expanded the last
	// event (its own counters).
	Seconds             float64 `json:"seconds"`
	EventsPerSecond     float64 `json:"events_per_second"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`
	// CPU per delivery of the relay (this process, which runs nothing
	// else meanwhile) and of Postgres.
	RelayCPUPerDeliveryUs    float64 `json:"relay_cpu_per_delivery_us"`
	PostgresCPUPerDeliveryUs float64 `json:"postgres_cpu_per_delivery_us"`
	Complete                 bool    `json:"complete"`
	LoadAverage              float64 `json:"load_average"`
}

// relay runs `herald bench relay`: -n deliveries, first as -n events to
// users with one device, then as -n/4 events to users with four.
func (b *bench) relay(ctx context.Context) (*relayResult, error) {
	res := &relayResult{Scenario: "relay", TxSize: b.opts.txSize, GoVersion: runtime.Version(),
		CPUs: runtime.NumCPU(), PostgresVersion: b.pgVer}
	for _, perUser := range []int{1, 4} {
		ph, err := b.relayPhase(ctx, perUser)
		if err != nil {
			return nil, fmt.Errorf("%d device(s) per user: %w", perUser, err)
		}
		res.Phases = append(res.Phases, *ph)
	}
	res.LoadAverage = benchLoadAverage()
	return res, nil
}

func (b *bench) relayPhase(ctx context.Context, perUser int) (*relayPhase, error) {
	name := fmt.Sprintf("relay_%d", perUser)
	pool, drop, err := b.newDatabase(ctx, name)
	if err != nil {
		return nil, err
	}
	defer drop()
	deliveries := b.opts.n - b.opts.n%perUser
	events := deliveries / perUser
	ph := &relayPhase{DevicesPerUser: perUser, Events: events, Deliveries: deliveries}
	if err := benchLoadDevices(ctx, pool, deliveries, perUser, b.progressf); err != nil {
		return nil, fmt.Errorf("load tokens: %w", err)
	}
	rules := benchRules(benchCampaignRule)
	if err := b.commitEvents(ctx, pool, rules, events); err != nil {
		return nil, err
	}
	relay, err := outbox.NewRelay(pool, rules, adapters.RelayStoreIn, outbox.RelayConfig{Logger: b.log})
	if err != nil {
		return nil, err
	}
	runtime.GC()
	cpu0, pg0 := benchProcessCPU(), benchPostgresCPU(b.dataDir())
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ran := make(chan error, 1)
	start := time.Now()
	go func() { ran <- relay.Run(runCtx) }()
	deadline := start.Add(b.opts.timeout)
	for relay.Stats().Events < int64(events) && time.Now().Before(deadline) {
		if !cli.Sleep(ctx, 2*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	took := time.Since(start)
	cpu, pg := benchProcessCPU()-cpu0, benchPostgresCPU(b.dataDir())-pg0
	stop()
	if err := <-ran; err != nil {
		return nil, err
	}
	s := relay.Stats()
	ph.Complete = s.Events >= int64(events) && s.Deliveries >= int64(deliveries)
	ph.Seconds = took.Seconds()
	ph.EventsPerSecond = float64(s.Events) / ph.Seconds
	ph.DeliveriesPerSecond = float64(s.Deliveries) / ph.Seconds
	if s.Deliveries > 0 {
		ph.RelayCPUPerDeliveryUs = cpu.Seconds() / float64(s.Deliveries) * 1e6
		ph.PostgresCPUPerDeliveryUs = pg.Seconds() / float64(s.Deliveries) * 1e6
	}
	ph.LoadAverage = benchLoadAverage()
	b.progressf("%s: %d events into %d deliveries in %.2fs: %.0f events/s, %.0f deliveries/s; cpu/delivery relay %.0fµs postgres %.0fµs",
		name, s.Events, s.Deliveries, ph.Seconds, ph.EventsPerSecond, ph.DeliveriesPerSecond,
		ph.RelayCPUPerDeliveryUs, ph.PostgresCPUPerDeliveryUs)
	return ph, nil
}

// commitEvents commits one personalised event to each of users
// 0..events-1, -tx-size events per host transaction, from -writers
// goroutines, with no Herald running.
func (b *bench) commitEvents(ctx context.Context, pool *pgxpool.Pool, rules *notification.Rules, events int) error {
	h, err := herald.New(pool, nil, rules, herald.Config{Logger: b.log})
	if err != nil {
		return err
	}
	o := b.opts
	o.n = events
	began := time.Now()
	if err := benchPersonalisedScenario(o).raise(ctx, h, pool, &benchCommitLog{}); err != nil {
		return fmt.Errorf("commit the backlog: %w", err)
	}
	b.progressf("committed %d events in %.1fs (%.0f/s)", events, time.Since(began).Seconds(),
		float64(events)/time.Since(began).Seconds())
	return nil
}
