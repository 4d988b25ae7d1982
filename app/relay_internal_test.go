package app

import (
	"fmt"
	"testing"
)

func TestFailureCounterStaysBounded(t *testing.T) {
	t.Parallel()
	var c failureCounter
	for i := range 3 * maxTracked {
		c.fail(fmt.Sprint(i))
	}
	if len(c.tries) > maxTracked {
		t.Fatalf("tracks %d messages, more than %d", len(c.tries), maxTracked)
	}
	if c.fail("m") != 1 || c.fail("m") != 2 {
		t.Fatal("counts per message")
	}
	c.forget("m")
	if c.fail("m") != 1 {
		t.Fatal("forgets a message that went through")
	}
}
