-- What product teams set on a notification (issue 10): an idempotency key,
-- a send time, an expiry, a collapse key, and rich platform options.
--
-- idempotency_key is unique per recipient while idempotent_until has not
-- passed: a raise after that releases the old row's key (sets it NULL)
-- before inserting its own, so the unique index needs no time in it.
-- superseded_at is set on every older notification of a recipient's
-- collapse key when a newer one is expanded; the claim closes such a
-- notification's deliveries as superseded with one column test.
ALTER TABLE herald_notifications
    ADD COLUMN idempotency_key  text,
    ADD COLUMN idempotent_until timestamptz,
    ADD COLUMN send_at          timestamptz,
    ADD COLUMN expires_at       timestamptz,
    ADD COLUMN collapse_key     text,
    ADD COLUMN superseded_at    timestamptz,
    ADD COLUMN options          jsonb;

CREATE UNIQUE INDEX herald_notifications_idempotency_idx ON herald_notifications (recipient, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX herald_notifications_collapse_idx ON herald_notifications (recipient, collapse_key, created_at, id)
    WHERE collapse_key IS NOT NULL;
