package herald_test

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
)

// TestWithDefaultsShowsAValueForEverySetting: an operator printing the
// configuration in effect sees every setting's value, none left at zero,
// and the values the host chose kept as chosen.
func TestWithDefaultsShowsAValueForEverySetting(t *testing.T) {
	t.Parallel()
	d := herald.Config{}.WithDefaults()
	unset := []string{
		"Pooler.ListenURL",   // empty means no direct session: there is no default to show
		"Sender.MaxInFlight", // 0 means the concurrency adapts, up to Sender.InFlightCeiling
	}
	for path, v := range leaves(reflect.ValueOf(d), "") {
		if !slices.Contains(unset, path) {
			assert.False(t, v.IsZero(), "%s has no default", path)
		}
	}
	assert.Equal(t, 500, d.Sender.BatchSize)
	assert.Equal(t, time.Minute, d.Sender.Lease)
	assert.Equal(t, 20*time.Second, d.FCM.SendTimeout)
	assert.Equal(t, 25*time.Millisecond, d.Relay.PollInterval)
	assert.Equal(t, 5000, d.Broadcast.ChunkSize)
	assert.Equal(t, 270*24*time.Hour, d.Housekeeping.TokenMaxAge)

	set := herald.Config{
		Sender:       herald.SenderConfig{BatchSize: 7, Lease: 3 * time.Second},
		FCM:          herald.FCMConfig{SendTimeout: time.Second},
		Housekeeping: herald.HousekeepingConfig{OutboxRetention: -1},
	}.WithDefaults()
	assert.Equal(t, 7, set.Sender.BatchSize)
	assert.Equal(t, 3*time.Second, set.Sender.Lease)
	assert.Equal(t, time.Second, set.FCM.SendTimeout)
	assert.Equal(t, time.Duration(-1), set.Housekeeping.OutboxRetention, "a sweep turned off stays off")
	assert.Equal(t, 0, set.Sender.MaxInFlight, "an unset MaxInFlight stays unset: the concurrency adapts")
	assert.Equal(t, 2048, set.Sender.InFlightCeiling)
	require.NoError(t, set.Validate())
}

// leaves returns every field below v that is not a struct, by its path.
func leaves(v reflect.Value, prefix string) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	for i := range v.NumField() {
		f, path := v.Field(i), prefix+v.Type().Field(i).Name
		if f.Kind() == reflect.Struct {
			for p, l := range leaves(f, path+".") {
				out[p] = l
			}
			continue
		}
		out[path] = f
	}
	return out
}

// TestTheREADMEListsEverySetting: every setting of Config has a row in the
// README's configuration table (Sender.Retry's three fields share one).
func TestTheREADMEListsEverySetting(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Za-z.]+)` \\|").FindAllStringSubmatch(string(readme), -1) {
		rows[m[1]] = true
	}
	for path := range leaves(reflect.ValueOf(herald.Config{}), "") {
		listed := rows[path]
		if parent, _, ok := strings.Cut(path, ".Retry."); ok {
			listed = rows[parent+".Retry"]
		}
		assert.True(t, listed, "README's configuration table has no row for %s", path)
	}
}
