package demo

import (
	"net"
	"testing"
)

// TestTheDemoConsoleGivenOnlyAPortIsReachableFromThisMachineOnly: the
// demo's console has no authentication and shows notifications' content,
// over DATABASE_URL's whole database when it is set. `-console :8080`, as
// the README suggests, listened on every interface: anyone on the network
// could read it and retry, replay and cancel. A bare port now means
// loopback; a host given explicitly (0.0.0.0:8080) is the operator's choice.
func TestTheDemoConsoleGivenOnlyAPortIsReachableFromThisMachineOnly(t *testing.T) {
	for _, addr := range []string{":0", "localhost:0", "127.0.0.1:0"} {
		oc, err := listenOperatorConsole(addr)
		if err != nil {
			t.Fatalf("listen %q: %v", addr, err)
		}
		ip := oc.ln.Addr().(*net.TCPAddr).IP
		oc.Close()
		if !ip.IsLoopback() {
			t.Errorf("-console %s listens on %s, not only on loopback", addr, ip)
		}
	}
	oc, err := listenOperatorConsole("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	if ip := oc.ln.Addr().(*net.TCPAddr).IP; !ip.IsUnspecified() {
		t.Errorf("-console 0.0.0.0:0 listens on %s: an explicit host is the operator's choice", ip)
	}
}
