package app

// WithDefaults returns c with every zero field set to its documented
// default: the configuration in effect, for herald.Config.WithDefaults.
func (c HousekeepingConfig) WithDefaults() HousekeepingConfig {
	c.setDefaults()
	return c
}
