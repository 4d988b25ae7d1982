DROP INDEX herald_deliveries_finished_idx;
CREATE INDEX herald_deliveries_finished_idx ON herald_deliveries (updated_at)
    WHERE status IN ('sent', 'token_pruned', 'token_moved');
ALTER TABLE herald_deliveries DROP CONSTRAINT herald_deliveries_status_check;
-- Never sent and never will be: they read as pruned to the older schema.
UPDATE herald_deliveries SET status = 'token_pruned'
    WHERE status IN ('expired', 'superseded', 'cancelled', 'muted');
ALTER TABLE herald_deliveries ADD CONSTRAINT herald_deliveries_status_check CHECK (status IN
    ('pending', 'claimed', 'sent', 'retry_scheduled', 'token_pruned', 'token_moved', 'failed'));
