package app

import (
	"log/slog"
	"time"
)

// WithDefaults returns c with every zero field set to its documented
// default: the configuration in effect, for herald.Config.WithDefaults.
func (c BroadcastExpanderConfig) WithDefaults() BroadcastExpanderConfig {
	c.setDefaults()
	return c
}

func (c *BroadcastExpanderConfig) setDefaults() {
	if c.ChunkSize == 0 {
		c.ChunkSize = 5000
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	c.Now = clockOrDefault(c.Now)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}
