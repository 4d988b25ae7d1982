package adapters

// WithDefaults returns c with every zero field set to its documented
// default, so that relations between settings (herald.Config.Validate's
// "Sender.Lease at least twice FCM.SendTimeout") can be checked on the
// values in effect.
func (c FCMSenderConfig) WithDefaults() FCMSenderConfig {
	c.setDefaults()
	return c
}
