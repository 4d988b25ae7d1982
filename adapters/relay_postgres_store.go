package adapters

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/app"
)

// The functions below bind Postgres repositories to one transaction, in the
// shapes package outbox takes (func(pgx.Tx) app.X): the composition root
// hands them to outbox, which never builds a repository itself.

// NotificationWriterIn returns the notification repository on the host's
// transaction tx, for outbox.New.
func NotificationWriterIn(tx pgx.Tx) app.NotificationWriter {
	return NewPostgresNotificationRepository(tx)
}

// RelayStoreIn returns the relay's store on the subscriber's transaction
// tx, for outbox.NewRelay.
func RelayStoreIn(tx pgx.Tx) app.RelayStore { return postgresRelayStore{tx: tx} }

// DeadLettersIn returns the dead letter repository on tx, for
// outbox.ReplayDeadLetters.
func DeadLettersIn(tx pgx.Tx) app.DeadLetterReplayStore { return NewPostgresDeadLetterRepository(tx) }

// postgresRelayStore implements app.RelayStore in one transaction;
// savepoints are pgx's nested transactions.
type postgresRelayStore struct{ tx pgx.Tx }

func (s postgresRelayStore) Expand(ctx context.Context, notificationIDs []uuid.UUID) (int, error) {
	return NewPostgresDeliveryRepository(s.tx).Expand(ctx, notificationIDs)
}

func (s postgresRelayStore) AddDeadLetters(ctx context.Context, dls []app.DeadLetter) error {
	return NewPostgresDeadLetterRepository(s.tx).AddMany(ctx, dls)
}

func (s postgresRelayStore) Savepoint(ctx context.Context, fn func(app.RelayStore) error) error {
	return pgx.BeginFunc(ctx, s.tx, func(sp pgx.Tx) error { return fn(postgresRelayStore{tx: sp}) })
}

func (postgresRelayStore) IsTransient(err error) bool { return IsTransient(err) }
