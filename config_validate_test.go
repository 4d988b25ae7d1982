package herald_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
)

// TestConfigValidateNamesEveryInvalidFieldByPathInAStableOrder: an operator
// reads which setting is wrong, by its path in herald.Config, and reads the
// same message, in the same order, every time.
func TestConfigValidateNamesEveryInvalidFieldByPathInAStableOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  herald.Config
		want string // "" means valid
	}{
		{name: "zero value is valid", cfg: herald.Config{}},
		{name: "test configuration is valid", cfg: fastConfig()},
		{
			name: "every negative sender duration, in field order",
			cfg: herald.Config{Sender: herald.SenderConfig{
				MaxInFlight: -1, Lease: -1, PollInterval: -1, FlushInterval: -1,
				Retry:            notification.RetryPolicy{MaxAttempts: -1, BaseDelay: -1, MaxDelay: -1},
				CircuitOpenPause: -1, QuotaPause: -1,
			}},
			want: "Sender.MaxInFlight must not be negative\n" +
				"Sender.Lease must not be negative\n" +
				"Sender.PollInterval must not be negative\n" +
				"Sender.FlushInterval must not be negative\n" +
				"Sender.Retry.MaxAttempts must not be negative\n" +
				"Sender.Retry.BaseDelay must not be negative\n" +
				"Sender.Retry.MaxDelay must not be negative\n" +
				"Sender.CircuitOpenPause must not be negative\n" +
				"Sender.QuotaPause must not be negative",
		},
		{
			name: "parts in field order",
			cfg: herald.Config{
				Housekeeping: herald.HousekeepingConfig{Interval: -1},
				Broadcast:    herald.BroadcastConfig{ChunkSize: -1},
				FCM:          herald.FCMConfig{BreakerOpenFor: -1},
				Sender:       herald.SenderConfig{BatchSize: -1},
				Relay:        herald.RelayConfig{AckDeadline: time.Second},
			},
			want: "Relay.AckDeadline must be longer than 2s\n" +
				"Sender.BatchSize must not be negative\n" +
				"FCM.BreakerOpenFor must not be negative\n" +
				"Broadcast.ChunkSize must not be negative\n" +
				"Housekeeping.Interval must not be negative",
		},
		{
			name: "lease shorter than twice the send timeout",
			cfg: herald.Config{
				Sender: herald.SenderConfig{Lease: 10 * time.Second},
				FCM:    herald.FCMConfig{SendTimeout: 6 * time.Second},
			},
			want: "Sender.Lease (10s) must be at least twice FCM.SendTimeout (6s)",
		},
		{
			name: "default lease against a long send timeout",
			cfg:  herald.Config{FCM: herald.FCMConfig{SendTimeout: 31 * time.Second}},
			want: "Sender.Lease (1m0s) must be at least twice FCM.SendTimeout (31s)",
		},
		{
			name: "short lease against the default send timeout",
			cfg:  herald.Config{Sender: herald.SenderConfig{Lease: 39 * time.Second}},
			want: "Sender.Lease (39s) must be at least twice FCM.SendTimeout (20s)",
		},
		{
			name: "lease exactly twice the send timeout",
			cfg: herald.Config{
				Sender: herald.SenderConfig{Lease: 2 * time.Second},
				FCM:    herald.FCMConfig{SendTimeout: time.Second},
			},
		},
		{
			name: "retry cap below the default base delay",
			cfg:  herald.Config{Sender: herald.SenderConfig{Retry: notification.RetryPolicy{MaxDelay: time.Second}}},
			want: "Sender.Retry.MaxDelay (1s) must not be shorter than Retry.BaseDelay (10s)",
		},
		{
			name: "every sender setting out of range, in field order",
			cfg: herald.Config{Sender: herald.SenderConfig{
				RatePerMinute: -1, QuotaDevices: 1001, QuotaWindow: -1,
				PlatformPause: -1, PlatformMaxPause: -1, AlarmLogInterval: -1,
			}},
			want: "Sender.RatePerMinute must not be negative\n" +
				"Sender.QuotaDevices must be between 0 and 1000\n" +
				"Sender.QuotaWindow must not be negative\n" +
				"Sender.PlatformPause must not be negative\n" +
				"Sender.PlatformMaxPause must not be negative\n" +
				"Sender.AlarmLogInterval must not be negative",
		},
		{
			name: "every relay setting out of range, in field order",
			cfg: herald.Config{Relay: herald.RelayConfig{
				PollInterval: -1, BatchSize: -1, AckDeadline: -1, LongTransactionWarning: -1, RestoreCheckInterval: -1,
			}},
			want: "Relay.PollInterval must not be negative\n" +
				"Relay.BatchSize must not be negative\n" +
				"Relay.AckDeadline must be longer than 2s\n" +
				"Relay.LongTransactionWarning must not be negative\n" +
				"Relay.RestoreCheckInterval must not be negative",
		},
		{
			name: "every FCM setting out of range, in field order",
			cfg:  herald.Config{FCM: herald.FCMConfig{SendTimeout: -1, BreakerOpenFor: -1, RampMax: -1}},
			want: "FCM.SendTimeout must not be negative\n" +
				"FCM.BreakerOpenFor must not be negative\n" +
				"FCM.RampMax must not be negative",
		},
		{
			name: "every broadcast and housekeeping setting out of range, in field order",
			cfg: herald.Config{
				Broadcast:    herald.BroadcastConfig{ChunkSize: -1, PollInterval: -1},
				Housekeeping: herald.HousekeepingConfig{Interval: -1, BatchSize: -1},
			},
			want: "Broadcast.ChunkSize must not be negative\n" +
				"Broadcast.PollInterval must not be negative\n" +
				"Housekeeping.Interval must not be negative\n" +
				"Housekeeping.BatchSize must not be negative",
		},
		{
			name: "a negative retention turns its sweep off",
			cfg: herald.Config{Housekeeping: herald.HousekeepingConfig{
				OutboxRetention: -1, DeliveryRetention: -1, FailedRetention: -1, TokenMaxAge: -1,
			}},
		},
		{
			name: "part errors come before relations",
			cfg: herald.Config{
				FCM:    herald.FCMConfig{SendTimeout: time.Minute},
				Sender: herald.SenderConfig{MaxInFlight: -1},
				Relay:  herald.RelayConfig{BatchSize: -1},
			},
			want: "Relay.BatchSize must not be negative\n" +
				"Sender.MaxInFlight must not be negative\n" +
				"Sender.Lease (1m0s) must be at least twice FCM.SendTimeout (1m0s)",
		},
		{
			name: "the defaults in effect are valid",
			cfg:  herald.Config{}.WithDefaults(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.want, err.Error())
			for range 10 { // a map's order would change from call to call
				assert.Equal(t, tt.want, tt.cfg.Validate().Error())
			}
		})
	}
}

// A configuration Validate accepts lets pushes start: a claimed delivery
// is pushed only while its push's timeout and the time to record it
// (Sender.FlushInterval and a round trip to the database) remain of its
// lease, so a lease no longer than that gives every claim back unpushed,
// forever (seen: Lease 1s and SendTimeout 500ms, twice it and so accepted
// before, delivered nothing in 10 s).
func TestAConfigUnderWhichNoPushCouldStartIsRefused(t *testing.T) {
	t.Parallel()
	cfg := herald.Config{
		Sender: herald.SenderConfig{Lease: time.Second},
		FCM:    herald.FCMConfig{SendTimeout: 500 * time.Millisecond},
	}
	assert.EqualError(t, cfg.Validate(),
		"Sender.Lease (1s) must be longer than FCM.SendTimeout and the time to record a push (1.1s): no push could start")
	cfg.Sender.FlushInterval = time.Second
	cfg.Sender.Lease = 2 * time.Second
	assert.EqualError(t, cfg.Validate(),
		"Sender.Lease (2s) must be longer than FCM.SendTimeout and the time to record a push (2s): no push could start")
	cfg.Sender.Lease = 3 * time.Second
	assert.NoError(t, cfg.Validate())
}
