-- Housekeeping deletes finished deliveries by age; this index keeps that
-- cheap however large the table grows, and leaves claims untouched (they
-- use the partial index on open deliveries).
CREATE INDEX herald_deliveries_finished_idx ON herald_deliveries (updated_at)
    WHERE status IN ('sent', 'token_pruned');
CREATE INDEX herald_dead_letters_replayed_idx ON herald_dead_letters (replayed_at)
    WHERE replayed_at IS NOT NULL;
