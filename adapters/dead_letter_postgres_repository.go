package adapters

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/app"
)

// DeadLetter is an outbox message, or one event of it, that the relay could
// not process (app.DeadLetter).
type DeadLetter = app.DeadLetter

// PostgresDeadLetterRepository stores dead letters in herald_dead_letters.
type PostgresDeadLetterRepository struct {
	db DB
}

// NewPostgresDeadLetterRepository returns a repository on db; the relay
// makes one on its transaction, so the dead letter commits with the ack.
func NewPostgresDeadLetterRepository(db DB) *PostgresDeadLetterRepository {
	return &PostgresDeadLetterRepository{db: requireDB(db)}
}

// maxReasonLength bounds a stored reason, in bytes.
const maxReasonLength = 2000

// Add stores a dead letter and returns its id. It stores anything: a nil
// payload is stored empty; the reason is made valid text (invalid UTF-8 and
// NUL replaced, so a reason quoting bad input is kept) and cut to 2,000 bytes on a character boundary; NUL in
// metadata (which jsonb cannot hold) is replaced too.
func (r *PostgresDeadLetterRepository) Add(ctx context.Context, dl DeadLetter) (int64, error) {
	metadata, reason, err := storableLetter(&dl)
	if err != nil {
		return 0, err
	}
	var id int64
	err = r.db.QueryRow(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, metadata, reason, created_at)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		dl.Topic, dl.MessageUUID, dl.Payload, metadata, reason, dl.CreatedAt).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("store dead letter: %w", err)
	}
	return id, nil
}

// AddMany stores dead letters as Add does, in one statement.
func (r *PostgresDeadLetterRepository) AddMany(ctx context.Context, dls []DeadLetter) error {
	if len(dls) == 0 {
		return nil
	}
	topics, uuids := make([]string, len(dls)), make([]string, len(dls))
	payloads, metadata := make([][]byte, len(dls)), make([]*string, len(dls))
	reasons, created := make([]string, len(dls)), make([]time.Time, len(dls))
	for i := range dls {
		dl := dls[i]
		md, reason, err := storableLetter(&dl)
		if err != nil {
			return err
		}
		if md != nil {
			text := string(md)
			metadata[i] = &text
		}
		topics[i], uuids[i], payloads[i], reasons[i], created[i] = dl.Topic, dl.MessageUUID, dl.Payload, reason, dl.CreatedAt
	}
	_, err := r.db.Exec(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, metadata, reason, created_at)
		SELECT topic, message_uuid, payload, metadata::jsonb, reason, created_at
		FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::timestamptz[])
			AS l(topic, message_uuid, payload, metadata, reason, created_at)`,
		topics, uuids, payloads, metadata, reasons, created)
	if err != nil {
		return fmt.Errorf("store dead letters: %w", err)
	}
	return nil
}

// storableLetter makes dl storable as Add documents: its payload never
// nil, its metadata encoded with NUL and invalid UTF-8 replaced, its reason
// made valid text and cut.
func storableLetter(dl *DeadLetter) (metadata []byte, reason string, err error) {
	if len(dl.Metadata) > 0 {
		clean := make(map[string]string, len(dl.Metadata))
		for k, v := range dl.Metadata {
			clean[storableText(k)] = storableText(v)
		}
		if metadata, err = json.Marshal(clean); err != nil {
			return nil, "", fmt.Errorf("encode dead letter metadata: %w", err)
		}
	}
	if dl.Payload == nil {
		dl.Payload = []byte{}
	}
	return metadata, truncateText(storableText(dl.Reason), maxReasonLength), nil
}

// storableText returns s as text Postgres accepts: valid UTF-8 without NUL,
// each NUL and each run of invalid bytes replaced by U+FFFD.
func storableText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// truncateText cuts valid UTF-8 s to at most n bytes without splitting a
// character.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// List returns up to limit dead letters, newest first; with pendingOnly,
// only those not yet replayed. Each carries the first
// app.ListedPayloadBytes of its payload and the payload's size: reading
// whole payloads of up to 16 MiB, a page of a hundred was gigabytes.
func (r *PostgresDeadLetterRepository) List(ctx context.Context, pendingOnly bool, limit int) ([]DeadLetter, error) {
	rows, err := r.db.Query(ctx, `SELECT id, topic, message_uuid, substring(payload FROM 1 FOR $3), octet_length(payload),
			metadata, reason, created_at, replayed_at
		FROM herald_dead_letters WHERE NOT $1 OR replayed_at IS NULL ORDER BY id DESC LIMIT $2`,
		pendingOnly, limit, app.ListedPayloadBytes)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	dls, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DeadLetter, error) {
		var dl DeadLetter
		var replayed *time.Time
		if err := row.Scan(&dl.ID, &dl.Topic, &dl.MessageUUID, &dl.Payload, &dl.PayloadBytes, &dl.Metadata, &dl.Reason,
			&dl.CreatedAt, &replayed); err != nil {
			return DeadLetter{}, err
		}
		if replayed != nil {
			dl.ReplayedAt = *replayed
		}
		return dl, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return dls, nil
}

// TakeForReplay locks up to limit not yet replayed dead letters with ids
// above after, among the given ids (every one when ids is empty), in id
// order, as long as their payloads total at most app.MaxOutboxMessageBytes
// (the first always), marks them replayed at now,
// and returns them, all in tx: the caller republishes them in the same
// transaction, so a dead letter is replayed once however often this runs.
// A letter may hold a 16 MiB message: without the bound a batch could be
// gigabytes.
func (r *PostgresDeadLetterRepository) TakeForReplay(ctx context.Context, ids []int64, after int64, limit int, now time.Time) ([]DeadLetter, error) {
	rows, err := r.db.Query(ctx, `
		UPDATE herald_dead_letters SET replayed_at = $2
		WHERE id IN (
			SELECT id FROM (
				SELECT id, sum(octet_length(payload)) OVER (ORDER BY id) AS upto, row_number() OVER (ORDER BY id) AS n
				FROM (
					SELECT id, payload FROM herald_dead_letters
					WHERE replayed_at IS NULL AND (coalesce(cardinality($1::bigint[]), 0) = 0 OR id = ANY ($1::bigint[]))
						AND id > $3
					ORDER BY id LIMIT $4 FOR UPDATE
				) locked
			) sized
			WHERE upto <= $5 OR n = 1
		)
		RETURNING id, topic, message_uuid, payload, metadata, reason, created_at, replayed_at`,
		ids, now, after, limit, app.MaxOutboxMessageBytes)
	if err != nil {
		return nil, fmt.Errorf("take dead letters for replay: %w", err)
	}
	dls, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DeadLetter, error) {
		var dl DeadLetter
		err := row.Scan(&dl.ID, &dl.Topic, &dl.MessageUUID, &dl.Payload, &dl.Metadata, &dl.Reason, &dl.CreatedAt, &dl.ReplayedAt)
		return dl, err
	})
	if err != nil {
		return nil, fmt.Errorf("take dead letters for replay: %w", err)
	}
	slices.SortFunc(dls, func(a, b DeadLetter) int { return cmp.Compare(a.ID, b.ID) })
	return dls, nil
}

// Untake marks the dead letters with the given ids not replayed again.
func (r *PostgresDeadLetterRepository) Untake(ctx context.Context, ids []int64) error {
	if _, err := r.db.Exec(ctx, `UPDATE herald_dead_letters SET replayed_at = NULL WHERE id = ANY ($1::bigint[])`, ids); err != nil {
		return fmt.Errorf("untake dead letters: %w", err)
	}
	return nil
}
