package bench

import (
	"os"
	"testing"

	"github.com/herald-push/herald/internal/cli"
)

// TestMain runs the bench's fake FCM, or one of its Herald processes,
// instead of the tests when a bench started this test binary as its child
// (see startBenchFakeProcess and startBenchHerald).
func TestMain(m *testing.M) {
	if os.Getenv(benchFakeEnv) == "1" {
		os.Exit(cli.Main("herald bench fake fcm", RunFakeFCM, os.Args[2:]))
	}
	if os.Getenv(benchHeraldEnv) == "1" {
		os.Exit(cli.Main("herald bench-herald", RunHerald, os.Args[2:]))
	}
	os.Exit(m.Run())
}
