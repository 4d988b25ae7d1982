// Package visible shows text read from the database, which users, hosts and
// FCM wrote, so that an operator reads it for what it is: on a terminal
// (the herald command) and in a browser (the operator console) alike.
package visible

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Text makes a value read from the database safe to show an operator, on a
// terminal or in a web page (which escapes HTML on top of it). User ids,
// types, error messages and dead letters' reasons come from users, hosts
// and FCM: a control character in one (ESC
// starting a sequence that rewrites the screen or writes the clipboard, a
// carriage return, a tab that shifts the table's columns) is written as a
// Go escape instead (\x1b, \x0d, \u009b), and so is every character a
// reader cannot see (see Hidden): a right-to-left override would show
// "mallory\u202eexe.txt" as "mallorytxt.exe", reordering what the operator
// reads, and a zero-width space makes two user ids that look alike differ.
// Bytes that are not UTF-8 are written as \x escapes too: passed raw, a
// terminal reading Latin-1 takes 0x9b for a control sequence.
func Text(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r == utf8.RuneError || Hidden(r) }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !Hidden(r):
			b.WriteString(s[i : i+size])
		case r < utf8.RuneSelf:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += size
	}
	return b.String()
}

// Hidden reports whether r is a character an operator reading a terminal
// cannot see for what it is: a control character; a format character
// (Unicode category Cf: the bidirectional overrides, embeddings and
// isolates U+202A–U+202E and U+2066–U+2069, the zero-width characters
// U+200B–U+200F, U+2060, U+FEFF, the soft hyphen, the tag characters); a
// line or paragraph separator; a character Unicode says to display as
// nothing (the Hangul fillers, the variation selectors); and a space other
// than U+0020, or the Braille blank, that passes for one.
func Hidden(r rune) bool {
	switch {
	case r == ' ':
		return false
	case r < utf8.RuneSelf:
		return unicode.IsControl(r)
	case r == '\u2800':
		return true
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zs, unicode.Zl, unicode.Zp,
		unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector)
}

// JSON escapes, in JSON that encoding/json wrote, every character
// Hidden reports that the encoder leaves as it is (it escapes the ASCII
// controls, U+2028 and U+2029 only), as \uXXXX: the same JSON to a
// program, and to an operator reading it on a terminal, what Text makes
// of a value. Outside strings such JSON holds only ASCII, so any such
// character is inside one.
func JSON(j []byte) []byte {
	var b []byte
	for i := 0; i < len(j); {
		r, size := utf8.DecodeRune(j[i:])
		if r < utf8.RuneSelf && r != 0x7f || !Hidden(r) {
			b = append(b, j[i:i+size]...)
			i += size
			continue
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			b = fmt.Appendf(b, `\u%04x\u%04x`, r1, r2)
		} else {
			b = fmt.Appendf(b, `\u%04x`, r)
		}
		i += size
	}
	return b
}
