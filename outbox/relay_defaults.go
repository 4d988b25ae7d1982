package outbox

// WithDefaults returns c with every zero field set to its documented
// default: the configuration in effect, for herald.Config.WithDefaults.
func (c RelayConfig) WithDefaults() RelayConfig {
	c.setDefaults()
	return c
}
