-- Several Herald processes on one database: who runs (herald_instances, one
-- row per running Herald, kept fresh by its heartbeat), who leads
-- (herald_leader, one row: a lease on the database's clock, never a session
-- lock, so that it works behind a transaction-pooling PgBouncer), and the
-- project's send budget shared by all of them (herald_send_budget, one row:
-- a token bucket refilled by the database's clock, and the pause every
-- instance honours after a project-wide QUOTA_EXCEEDED).
CREATE TABLE herald_instances (
    id           uuid PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

CREATE TABLE herald_leader (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder     uuid,
    expires_at timestamptz NOT NULL
);
INSERT INTO herald_leader (singleton, holder, expires_at) VALUES (true, NULL, 'epoch');

CREATE TABLE herald_send_budget (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Tokens left in the bucket at refilled_at.
    tokens       double precision NOT NULL,
    refilled_at  timestamptz NOT NULL,
    -- What the last grant gave (a statement's RETURNING sees new values only).
    last_grant   integer NOT NULL,
    -- No instance pushes before this (a project-wide QUOTA_EXCEEDED).
    paused_until timestamptz NOT NULL
);
INSERT INTO herald_send_budget (singleton, tokens, refilled_at, last_grant, paused_until)
    VALUES (true, 0, now(), 0, 'epoch');

-- The instance holding a claim, so that the claims of a dead instance come
-- back within seconds rather than at the end of their lease. The partial
-- index holds only claimed rows: a few batches per instance.
ALTER TABLE herald_deliveries ADD COLUMN claimed_by uuid;
CREATE INDEX herald_deliveries_claimed_by_idx ON herald_deliveries (claimed_by) WHERE status = 'claimed';
