DROP INDEX IF EXISTS herald_dead_letters_replayed_idx;
DROP INDEX IF EXISTS herald_deliveries_finished_idx;
