//go:build !linux

package bench

import (
	"errors"
	"time"
)

var errBenchNoProcfs = errors.New("peak RSS is measured on Linux only")

func benchResetPeakRSS() error { return errBenchNoProcfs }

func benchPeakRSS() (int64, error) { return 0, errBenchNoProcfs }

func benchProcessCPU() time.Duration { return 0 }

func benchSelfRSS() (anon, file int64) { return 0, 0 }

func benchPostgresCPU(string) time.Duration { return 0 }

func benchLoadAverage() float64 { return 0 }

func benchChildCPU(int) time.Duration { return 0 }
