// Package boundedlog bounds what one log record of Herald's can carry.
// Herald logs values it does not choose: a database's error (a host's
// trigger may quote a megabyte), FCM's or a proxy's words, the type of an
// event in a row written around Herald. Each is cut at the source where
// Herald knows it; this handler, wrapped around the host's, is the last
// line: a line of megabytes is one that log shippers drop, or split into
// pieces no query finds, and with it the warning it carried.
package boundedlog

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"unicode/utf8"
)

// MaxValue is the most bytes of text one attribute value keeps: a string,
// or the text of an error or a fmt.Stringer. A longer one is cut on a
// character boundary and says how long it was.
const MaxValue = 1024

// Logger returns l logging through a handler that bounds each value, or l
// itself if it already does.
func Logger(l *slog.Logger) *slog.Logger {
	if _, ok := l.Handler().(*handler); ok {
		return l
	}
	return slog.New(&handler{next: l.Handler()})
}

type handler struct{ next slog.Handler }

func (h *handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	long := false
	r.Attrs(func(a slog.Attr) bool {
		long = tooLong(a.Value)
		return !long
	})
	if !long && len(r.Message) <= MaxValue {
		return h.next.Handle(ctx, r)
	}
	// Records are rare and cutting rarer: a copy is cheap next to a
	// line of megabytes.
	out := slog.NewRecord(r.Time, r.Level, cut(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(bound(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	bounded := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		bounded[i] = bound(a)
	}
	return &handler{next: h.next.WithAttrs(bounded)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name)}
}

// tooLong reports whether v holds text past MaxValue.
func tooLong(v slog.Value) bool {
	v = v.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return len(v.String()) > MaxValue
	case slog.KindGroup:
		for _, a := range v.Group() {
			if tooLong(a.Value) {
				return true
			}
		}
	case slog.KindAny:
		if s, ok := text(v.Any()); ok {
			return len(s) > MaxValue
		}
	}
	return false
}

// bound returns a with its text cut to MaxValue.
func bound(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if len(v.String()) > MaxValue {
			return slog.String(a.Key, cut(v.String()))
		}
	case slog.KindGroup:
		group := v.Group()
		bounded := make([]any, len(group))
		for i, g := range group {
			bounded[i] = bound(g)
		}
		return slog.Group(a.Key, bounded...)
	case slog.KindAny:
		if s, ok := text(v.Any()); ok && len(s) > MaxValue {
			return slog.String(a.Key, cut(s))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// text is the text a handler would write for v, if v is an error or a
// fmt.Stringer.
func text(v any) (string, bool) {
	switch v := v.(type) {
	case error:
		return v.Error(), true
	case fmt.Stringer:
		return v.String(), true
	}
	return "", false
}

// cut returns s cut to MaxValue bytes on a character boundary, saying how
// long it was.
func cut(s string) string {
	if len(s) <= MaxValue {
		return s
	}
	n := MaxValue
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "... (" + strconv.Itoa(len(s)) + " bytes)"
}
