package outbox

import (
	"context"
	"log/slog"
)

// quietAfter returns a handler that passes records to h until ctx ends and
// then lowers them to debug: once Run is stopping, what the subscriber says
// about its cancelled queries and closed connections is the shutdown itself.
func quietAfter(ctx context.Context, h slog.Handler) slog.Handler {
	return &quietHandler{ctx: ctx, h: h}
}

type quietHandler struct {
	ctx context.Context
	h   slog.Handler
}

func (q *quietHandler) Enabled(ctx context.Context, level slog.Level) bool {
	if q.ctx.Err() != nil {
		level = slog.LevelDebug
	}
	return q.h.Enabled(ctx, level)
}

func (q *quietHandler) Handle(ctx context.Context, rec slog.Record) error {
	if q.ctx.Err() != nil && rec.Level > slog.LevelDebug {
		rec = rec.Clone()
		rec.Level = slog.LevelDebug
		if !q.h.Enabled(ctx, rec.Level) {
			return nil
		}
	}
	return q.h.Handle(ctx, rec)
}

func (q *quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &quietHandler{ctx: q.ctx, h: q.h.WithAttrs(attrs)}
}

func (q *quietHandler) WithGroup(name string) slog.Handler {
	return &quietHandler{ctx: q.ctx, h: q.h.WithGroup(name)}
}
