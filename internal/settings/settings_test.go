package settings_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/herald-push/herald/internal/settings"
)

func TestAZeroSettingTakesItsDefaultAndASetOneIsKept(t *testing.T) {
	t.Parallel()
	var zero, set time.Duration = 0, 3 * time.Second
	settings.Default(&zero, time.Minute)
	settings.Default(&set, time.Minute)
	assert.Equal(t, time.Minute, zero)
	assert.Equal(t, 3*time.Second, set)
}

func TestEveryNegativeSettingIsNamedInFieldOrder(t *testing.T) {
	t.Parallel()
	err := errors.Join(
		settings.NotNegative("BatchSize", -1),
		settings.NotNegative("Lease", time.Second),
		settings.NotNegative("PollInterval", -time.Millisecond),
		settings.Check("QuotaDevices", true, "must be between 0 and 1000"),
	)
	assert.EqualError(t, err, "BatchSize must not be negative\nPollInterval must not be negative\n"+
		"QuotaDevices must be between 0 and 1000")
	assert.NoError(t, errors.Join(settings.NotNegative("BatchSize", 0), settings.Check("X", false, "bad")))
}
