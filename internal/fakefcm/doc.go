// Package fakefcm is an in-process stand-in for the FCM HTTP v1 API on a
// loopback TLS listener: it speaks the real protocol to the real firebase
// SDK, answers scripted faults in real FCM's error shapes, and counts and
// records what it accepted.
//
// It serves `herald demo`, `herald bench` (also in its child process) and
// `herald chaos`, and testutil, whose FakeFCM, FakeFCMConfig, Received,
// Fault and FaultCode are this package's types. It imports no testing
// package, so the herald binary does not link one.
package fakefcm
