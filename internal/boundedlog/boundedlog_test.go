package boundedlog_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/herald-push/herald/internal/boundedlog"
)

// Every way a value reaches a line is bounded: an attribute, an error, one
// bound to the logger, one in a group, the message itself; short values
// pass untouched.
func TestNoValueMakesALogLineLongerThanItsBound(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("é", 1<<19) // a megabyte, cut on a character boundary
	var buf bytes.Buffer
	log := boundedlog.Logger(slog.New(slog.NewJSONHandler(&buf, nil)))
	assert.Same(t, log, boundedlog.Logger(log), "wrapped once")

	log.With("bound", huge).WithGroup("g").Warn(huge, "err", errors.New(huge), "s", huge,
		slog.Group("inner", "s", huge), "short", "kept whole")

	line := buf.String()
	assert.Less(t, len(line), 6*boundedlog.MaxValue+500, "%.300s", line)
	assert.Contains(t, line, `"short":"kept whole"`)
	assert.Contains(t, line, "... (1048576 bytes)", "a cut value says how long it was")
	assert.NotContains(t, line, `\ufffd`, "no character is cut in two")
}
