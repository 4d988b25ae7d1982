package herald_test

import (
	"fmt"
	"time"

	"github.com/herald-push/herald"
)

// ExampleConfig_Validate shows a configuration an operator got wrong: each
// bad setting is named by its path, parts first, then the relations
// between them, always in this order.
func ExampleConfig_Validate() {
	cfg := herald.Config{
		Sender: herald.SenderConfig{BatchSize: -1, Lease: 10 * time.Second},
		FCM:    herald.FCMConfig{SendTimeout: 6 * time.Second},
	}
	fmt.Println(cfg.Validate())
	// Output:
	// Sender.BatchSize must not be negative
	// Sender.Lease (10s) must be at least twice FCM.SendTimeout (6s)
}

// ExampleConfig_WithDefaults prints settings in effect: the host's own,
// and the documented defaults for the rest.
func ExampleConfig_WithDefaults() {
	cfg := herald.Config{Sender: herald.SenderConfig{MaxInFlight: 32}}.WithDefaults()
	fmt.Println(cfg.Sender.MaxInFlight, cfg.Sender.BatchSize, cfg.Sender.Lease, cfg.FCM.SendTimeout)
	// Output:
	// 32 500 1m0s 20s
}
