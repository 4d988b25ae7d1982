//go:build race

package fleettest_test

// raceDetector is true when the tests run with -race: every process is
// several times slower, and on a small machine the fleet can no longer keep
// up with its rate nor push at an even pace.
const raceDetector = true
