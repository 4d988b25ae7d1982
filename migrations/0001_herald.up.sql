-- Herald's schema: device tokens, notifications (the in-app inbox),
-- deliveries (one per notification and token), dead letters, and the
-- watermill-sql tables of the outbox topic "herald_outbox".

CREATE TABLE herald_device_tokens (
    token         text PRIMARY KEY,
    user_id       text NOT NULL,
    platform      text NOT NULL,
    registered_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL
);
CREATE INDEX herald_device_tokens_user_id_idx ON herald_device_tokens (user_id);
CREATE INDEX herald_device_tokens_last_seen_at_idx ON herald_device_tokens (last_seen_at);

CREATE TABLE herald_notifications (
    id          uuid PRIMARY KEY,
    recipient   text NOT NULL,
    type        text NOT NULL,
    title       text NOT NULL DEFAULT '',
    body        text NOT NULL DEFAULT '',
    data        jsonb NOT NULL DEFAULT '{}',
    ttl_seconds integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    read_at     timestamptz
);
-- The inbox: newest first, cursor on (created_at, id).
CREATE INDEX herald_notifications_inbox_idx ON herald_notifications (recipient, created_at DESC, id DESC);
CREATE INDEX herald_notifications_unread_idx ON herald_notifications (recipient) WHERE read_at IS NULL;

CREATE TABLE herald_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id uuid NOT NULL REFERENCES herald_notifications (id) ON DELETE CASCADE,
    token           text NOT NULL,
    status          text NOT NULL CHECK (status IN
                        ('pending', 'claimed', 'sent', 'retry_scheduled', 'token_pruned', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    -- The next attempt time, or for a claimed delivery the end of its lease.
    due_at          timestamptz NOT NULL,
    claim_id        uuid,
    last_error      text NOT NULL DEFAULT '',
    error_code      text NOT NULL DEFAULT '',
    message_name    text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (notification_id, token)
);
-- Claims scan only open deliveries, in due order; finished rows never enter
-- this index, so it stays small however large the table grows.
CREATE INDEX herald_deliveries_due_idx ON herald_deliveries (due_at)
    WHERE status IN ('pending', 'retry_scheduled', 'claimed');
CREATE INDEX herald_deliveries_failed_idx ON herald_deliveries (updated_at) WHERE status = 'failed';

CREATE TABLE herald_dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic        text NOT NULL,
    message_uuid text NOT NULL,
    payload      bytea NOT NULL,
    metadata     jsonb,
    reason       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz
);

-- watermill-sql v4 default PostgreSQL schema for the topic "herald_outbox".
-- Created here, never by watermill at run time (it refuses inside a
-- transaction, and concurrent creation races).
CREATE TABLE "watermill_herald_outbox" (
    "offset"         BIGSERIAL,
    "uuid"           VARCHAR(36) NOT NULL,
    "created_at"     TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "payload"        JSON DEFAULT NULL,
    "metadata"       JSON DEFAULT NULL,
    "transaction_id" xid8 NOT NULL,
    PRIMARY KEY ("transaction_id", "offset")
);
CREATE TABLE "watermill_offsets_herald_outbox" (
    consumer_group                VARCHAR(255) NOT NULL,
    offset_acked                  BIGINT,
    last_processed_transaction_id xid8 NOT NULL,
    PRIMARY KEY (consumer_group)
);
