-- Each instance registers the DeadAfter it was configured with, and is
-- judged dead by its own: an instance configured with a long DeadAfter (and
-- a long heartbeat interval) is no longer taken for dead between its beats
-- by one configured with a short one, which freed its live claims. NULL
-- (an instance of a Herald older than this migration) is judged by the
-- reaper's DeadAfter, as before.
ALTER TABLE herald_instances ADD COLUMN dead_after_us bigint CHECK (dead_after_us > 0);
