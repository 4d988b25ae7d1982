//go:build !race

package fleettest_test

// raceDetector is true when the tests run with -race.
const raceDetector = false
