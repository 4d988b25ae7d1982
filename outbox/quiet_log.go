package outbox

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
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

// handlerErrorsReported is the router's logger, less its own line for each
// message the handler fails ("Handler returned error", at error level):
// the relay reports those failures itself, once per interval with a count
// (app.RelayHandler) or once each where nothing else did (Relay.handle).
// The router's line came on every redelivery of every failing message: a
// database that refused the relay's writes for a minute, or a machine too
// loaded for a handler to finish in time, logged errors by the hundred for
// what the relay retries by itself. It is kept at debug.
type handlerErrorsReported struct {
	watermill.LoggerAdapter
}

// routerHandlerError is the router's message for a handler's error.
const routerHandlerError = "Handler returned error"

func (l handlerErrorsReported) Error(msg string, err error, fields watermill.LogFields) {
	if msg == routerHandlerError {
		l.LoggerAdapter.Debug(msg, fields.Add(watermill.LogFields{"err": err}))
		return
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l handlerErrorsReported) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return handlerErrorsReported{l.LoggerAdapter.With(fields)}
}
