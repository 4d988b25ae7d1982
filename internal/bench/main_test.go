package bench

import (
	"os"
	"testing"

	"github.com/herald-push/herald/internal/cli"
)

// TestMain runs the bench's fake FCM instead of the tests when TestBench
// started this test binary as its child (see startBenchFakeProcess).
func TestMain(m *testing.M) {
	if os.Getenv(benchFakeEnv) == "1" {
		os.Exit(cli.Main("herald bench fake fcm", RunFakeFCM, os.Args[2:]))
	}
	os.Exit(m.Run())
}
