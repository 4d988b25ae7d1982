package testutil

import (
	"testing"

	"github.com/herald-push/herald/internal/fakefcm"
)

// FakeFCM is an in-process stand-in for the FCM HTTP v1 API
// (POST /v1/projects/{project}/messages:send) on a loopback TLS listener.
//
// It accepts every well-formed message unless a Fault is scripted with FailToken or FailAll,
// answers errors in the exact shape real FCM uses, and records what it accepted. All methods
// are safe for concurrent use. There is no FCM emulator: this fake is what Herald's tests,
// `herald demo` and `herald bench` send to.
type FakeFCM = fakefcm.Server

// FakeFCMConfig configures a FakeFCM. The zero value is valid and means the documented
// defaults (see its fields).
type FakeFCMConfig = fakefcm.Config

// Received is one message the fake accepted.
type Received = fakefcm.Received

// Fault scripts how the fake answers matching requests. Register it with FakeFCM.FailToken or
// FakeFCM.FailAll.
type Fault = fakefcm.Fault

// FaultCode selects the answer a scripted Fault makes the fake give. Each code reproduces the
// HTTP status and error body real FCM sends, so the firebase SDK's error helpers classify it
// as they would in production.
type FaultCode = fakefcm.FaultCode

// The answers a Fault can script; each constant's documentation is in package fakefcm's
// FaultCode list, repeated here in brief.
const (
	// FaultNone accepts the message. With Fault.Latency it only slows matching requests down.
	FaultNone = fakefcm.FaultNone
	// FaultUnregistered answers 404 NOT_FOUND with FcmError UNREGISTERED: the token is dead.
	FaultUnregistered = fakefcm.FaultUnregistered
	// FaultInvalidToken answers 400 INVALID_ARGUMENT about the token.
	FaultInvalidToken = fakefcm.FaultInvalidToken
	// FaultInvalidMessage answers 400 INVALID_ARGUMENT about the message.
	FaultInvalidMessage = fakefcm.FaultInvalidMessage
	// FaultQuotaExceeded answers 429 RESOURCE_EXHAUSTED with FcmError QUOTA_EXCEEDED, and a
	// Retry-After header when Fault.RetryAfter > 0. The SDK does not retry it.
	FaultQuotaExceeded = fakefcm.FaultQuotaExceeded
	// FaultUnavailable answers 503 UNAVAILABLE, with Retry-After when Fault.RetryAfter > 0.
	// The SDK retries it.
	FaultUnavailable = fakefcm.FaultUnavailable
	// FaultInternal answers 500 INTERNAL with FcmError INTERNAL.
	FaultInternal = fakefcm.FaultInternal
	// FaultSenderIDMismatch answers 403 PERMISSION_DENIED with FcmError SENDER_ID_MISMATCH.
	FaultSenderIDMismatch = fakefcm.FaultSenderIDMismatch
	// FaultThirdPartyAuth answers 401 UNAUTHENTICATED with FcmError THIRD_PARTY_AUTH_ERROR.
	FaultThirdPartyAuth = fakefcm.FaultThirdPartyAuth
	// FaultUnauthenticated answers 401 UNAUTHENTICATED with no FcmError detail: the sender's
	// own credentials were rejected.
	FaultUnauthenticated = fakefcm.FaultUnauthenticated
	// FaultHang never answers until the client's context ends or the fake is closed.
	FaultHang = fakefcm.FaultHang
	// FaultBadRequest answers 400 INVALID_ARGUMENT with a plain Google error body.
	FaultBadRequest = fakefcm.FaultBadRequest
)

// StartFakeFCM starts a fake FCM server on 127.0.0.1 with a fresh self-signed certificate.
// It is meant for code that has no *testing.T; the caller must call Close. Tests should use
// NewFakeFCM.
func StartFakeFCM(cfg FakeFCMConfig) (*FakeFCM, error) { return fakefcm.Start(cfg) }

// NewFakeFCM starts a fake FCM server for a test, registers Close with t.Cleanup, and fails
// the test at once if the server cannot start.
func NewFakeFCM(t testing.TB, cfg FakeFCMConfig) *FakeFCM {
	t.Helper()
	f, err := fakefcm.Start(cfg)
	if err != nil {
		t.Fatalf("start fake fcm: %v", err)
	}
	t.Cleanup(f.Close)
	return f
}
