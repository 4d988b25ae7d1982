// Package settings owns the two rules every part config of Herald
// (app.SenderConfig, outbox.RelayConfig, adapters.FCMSenderConfig, ...)
// applies to its fields: a zero field takes its documented default, and a
// field that must not be negative is reported by its Go field name. The
// settings themselves are documented once, on herald.Config.
package settings

import "errors"

// Default sets *p to v when *p is the zero value of T.
func Default[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// signed is every integer kind a setting may have, time.Duration included.
type signed interface {
	~int | ~int8 | ~int16 | ~int32 | ~int64
}

// NotNegative returns "<name> must not be negative" when v < 0, and nil
// otherwise. Validate methods pass one result per field, in field order, to
// errors.Join, which drops the nils: every bad field is reported at once,
// always in the same order.
func NotNegative[T signed](name string, v T) error {
	return Check(name, v < 0, "must not be negative")
}

// Check returns "<name> <rule>" when bad, and nil otherwise: the form of
// every field error, for rules other than NotNegative.
func Check(name string, bad bool, rule string) error {
	if !bad {
		return nil
	}
	return errors.New(name + " " + rule)
}
