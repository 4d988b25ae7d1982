-- Broadcasts: a notification addressed to every device (optionally of some
-- platforms) rather than to one recipient. The relay records one row here;
-- the expander then creates its deliveries in bounded chunks, in token
-- order, remembering where it stopped.
ALTER TABLE herald_notifications ADD COLUMN audience jsonb;

CREATE TABLE herald_broadcasts (
    notification_id uuid PRIMARY KEY REFERENCES herald_notifications (id) ON DELETE CASCADE,
    platforms       text[] NOT NULL DEFAULT '{}',
    -- The last token expanded; the next chunk starts after it.
    last_token      text NOT NULL DEFAULT '',
    expanded        bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
CREATE INDEX herald_broadcasts_open_idx ON herald_broadcasts (created_at) WHERE finished_at IS NULL;
