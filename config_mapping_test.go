package herald

import (
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestEverySettingReachesThePartThatUsesIt: each field of Config's parts is
// handed to the internal config of the part that uses it, and each setting
// of those internal configs (but their logger, clock and telemetry, which
// Config holds once, and the sender's test-only jitter) has a field in Config. A setting
// added to a part but not to Config, or not mapped, fails here.
func TestEverySettingReachesThePartThatUsesIt(t *testing.T) {
	t.Parallel()
	var c Config
	fill(reflect.ValueOf(&c).Elem())
	internalOnly := []string{"Logger", "Now", "Jitter", "Budget", "Leader", "Telemetry"}
	for _, part := range []struct {
		name          string
		facade, inner any
		back          any
	}{
		{"Relay", c.Relay, c.relay(), relayFrom(c.relay())},
		{"Sender", c.Sender, c.sender(), senderFrom(c.sender())},
		{"FCM", c.FCM, c.fcm(), fcmFrom(c.fcm())},
		{"Broadcast", c.Broadcast, c.broadcast(), broadcastFrom(c.broadcast())},
		{"Housekeeping", c.Housekeeping, c.housekeeping(), housekeepingFrom(c.housekeeping())},
		{"Fleet", c.Fleet, c.fleet(), fleetFrom(c.fleet())},
		{"Raise", c.Raise, c.raise(), raiseFrom(c.raise())},
	} {
		assert.Equal(t, part.facade, part.back, "%s: every field survives the round trip", part.name)
		var want []string
		for _, f := range reflect.VisibleFields(reflect.TypeOf(part.inner)) {
			if !slices.Contains(internalOnly, f.Name) {
				want = append(want, f.Name)
			}
		}
		var got []string
		for _, f := range reflect.VisibleFields(reflect.TypeOf(part.facade)) {
			got = append(got, f.Name)
		}
		assert.Equal(t, want, got, "%s: Config has every setting of the part, in its order", part.name)
		inner := reflect.ValueOf(part.inner)
		for _, name := range got {
			assert.Equal(t, reflect.ValueOf(part.facade).FieldByName(name).Interface(), inner.FieldByName(name).Interface(),
				"%s.%s reaches the part", part.name, name)
		}
	}
	assert.Same(t, c.Logger, c.sender().Logger)
	assert.Same(t, c.Logger, c.relay().Logger)
	assert.Same(t, c.Logger, c.fcm().Logger)
	assert.Same(t, c.Logger, c.broadcast().Logger)
	assert.Same(t, c.Logger, c.housekeeping().Logger)
	assert.Equal(t, c.Now(), c.sender().Now())
	assert.Equal(t, c.Now(), c.relay().Now())
	assert.Equal(t, c.Now(), c.broadcast().Now())
}

// fill sets every field below v to a distinct non-zero value.
func fill(v reflect.Value) {
	n := int64(0)
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		for i := range v.NumField() {
			f := v.Field(i)
			n++
			switch f.Kind() {
			case reflect.Struct:
				walk(f)
			case reflect.Int, reflect.Int64:
				f.SetInt(n)
			case reflect.Uint32:
				f.SetUint(uint64(n))
			case reflect.String:
				f.SetString(strconv.FormatInt(n, 10))
			case reflect.Func:
				at := time.Unix(n, 0)
				f.Set(reflect.ValueOf(func() time.Time { return at }))
			case reflect.Pointer:
				f.Set(reflect.New(f.Type().Elem()))
			case reflect.Interface:
				// MeterProvider and TracerProvider: New hands them to
				// internal/telemetry, not to a part's config.
			default:
				panic("fill: unhandled kind " + f.Kind().String())
			}
		}
	}
	walk(v)
}
