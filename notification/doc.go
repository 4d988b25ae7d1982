// Package notification is Herald's domain: what a push notification is, the
// devices it goes to, one delivery per (notification, device) with its state
// transitions, the domain events that cause notifications, and the errors that
// name every way a send can end.
//
// The package is pure Go. It imports nothing else from this module and no
// database driver, SDK or message broker; it never logs and never reads the
// clock (callers pass the time in). Adapters rebuild entities from storage with
// the ...FromDatabase constructors, which skip validation and are meant only
// for that.
//
// Entities are not safe for concurrent use; the services in package app own
// them one goroutine at a time.
package notification
