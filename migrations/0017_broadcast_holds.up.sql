-- A broadcast chunk every delivery of which the host's database refuses
-- (a freeze trigger, or a foreign key refusing just the tokens that make up
-- the chunk) is held rather than skipped: the broadcast waits until
-- held_until, and the expander works on the others meanwhile. held_at (the
-- database's clock at the refusal) and held_mark (the highest delivery id
-- then) let the next try tell whether Herald's deliveries have been accepted
-- since: only then is the refusal the tokens' own, and they are skipped.
-- holds counts the tries refused in a row, for the back-off.
ALTER TABLE herald_broadcasts ADD COLUMN held_at timestamptz,
    ADD COLUMN held_mark bigint,
    ADD COLUMN held_until timestamptz,
    ADD COLUMN holds integer NOT NULL DEFAULT 0;
