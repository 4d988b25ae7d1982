package opscli

import (
	"fmt"
	"strings"
	"unicode"
)

// shown makes a value read from the database safe to print on an
// operator's terminal. User ids, types, error messages and dead letters'
// reasons come from users, hosts and FCM: a control character in one (ESC
// starting a sequence that rewrites the screen or writes the clipboard, a
// carriage return, a tab that shifts the table's columns) is written as a
// Go escape instead (\x1b, \r, \u009b).
func shown(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case !unicode.IsControl(r):
			b.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}
