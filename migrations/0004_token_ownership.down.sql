DROP INDEX IF EXISTS herald_deliveries_finished_idx;
CREATE INDEX herald_deliveries_finished_idx ON herald_deliveries (updated_at)
    WHERE status IN ('sent', 'token_pruned');
DROP INDEX IF EXISTS herald_deliveries_open_token_idx;
-- A moved delivery was never sent and never will be: it reads as pruned to
-- the older schema.
UPDATE herald_deliveries SET status = 'token_pruned' WHERE status = 'token_moved';
ALTER TABLE herald_deliveries DROP CONSTRAINT herald_deliveries_status_check;
ALTER TABLE herald_deliveries ADD CONSTRAINT herald_deliveries_status_check CHECK (status IN
    ('pending', 'claimed', 'sent', 'retry_scheduled', 'token_pruned', 'failed'));
