package demo

import (
	"net"
	"net/http"
	"net/http/httptest"
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

// TestTheDemoConsoleOnLoopbackAnswersOnlyToThisMachinesNames: a web page
// the operator visits can rebind its own name to 127.0.0.1 (DNS
// rebinding) and then be same-origin with the console: read it, take
// its forms' tokens and post them, since neither the cookie nor the
// cross-origin check can tell. A console listening on loopback now
// answers only requests addressed to localhost or a loopback address.
func TestTheDemoConsoleOnLoopbackAnswersOnlyToThisMachinesNames(t *testing.T) {
	oc, err := listenOperatorConsole(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	h := oc.guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for host, want := range map[string]int{
		"localhost:8080": http.StatusNoContent, "127.0.0.1:8080": http.StatusNoContent, "[::1]:8080": http.StatusNoContent,
		"LOCALHOST": http.StatusNoContent, "127.0.0.1": http.StatusNoContent,
		"attacker.example:8080": http.StatusMisdirectedRequest, "attacker.example": http.StatusMisdirectedRequest,
		"localhost.attacker.example": http.StatusMisdirectedRequest, "": http.StatusMisdirectedRequest,
	} {
		r := httptest.NewRequest(http.MethodPost, "/cancel", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Host %q: %d, want %d", host, w.Code, want)
		}
	}
}
