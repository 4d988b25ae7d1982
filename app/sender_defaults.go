package app

// WithDefaults returns c with every zero field set to its documented
// default, so that relations between settings (Config.Validate's "Lease at
// least twice the send timeout") can be checked on the values in effect.
func (c SenderConfig) WithDefaults() SenderConfig {
	c.setDefaults()
	return c
}
