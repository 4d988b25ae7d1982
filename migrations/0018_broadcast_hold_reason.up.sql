-- A held broadcast (migration 0017) keeps the refusal that holds it, so that
-- an operator sees why it waits, and until when, in Status, Timeline, the
-- CLI and the console, not only in a log line. The reason is the host
-- database's text with the token shown by its hash, at most 1 KiB, as
-- refusal is.
ALTER TABLE herald_broadcasts ADD COLUMN held_reason text;
