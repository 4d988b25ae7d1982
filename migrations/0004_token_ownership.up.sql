-- A push reaches only its recipient: a delivery whose token was registered
-- to another user before the push ends 'token_moved' instead of being sent.
ALTER TABLE herald_deliveries DROP CONSTRAINT herald_deliveries_status_check;
ALTER TABLE herald_deliveries ADD CONSTRAINT herald_deliveries_status_check CHECK (status IN
    ('pending', 'claimed', 'sent', 'retry_scheduled', 'token_pruned', 'token_moved', 'failed'));

-- Open deliveries by token: recording a pruned token, unregistering a token
-- and moving a token to another user close that token's open deliveries
-- through this index instead of scanning the table. Finished rows never
-- enter it, so it stays as small as the backlog.
CREATE INDEX herald_deliveries_open_token_idx ON herald_deliveries (token)
    WHERE status IN ('pending', 'retry_scheduled', 'claimed');

-- Housekeeping deletes moved deliveries by age like the other finished ones.
DROP INDEX herald_deliveries_finished_idx;
CREATE INDEX herald_deliveries_finished_idx ON herald_deliveries (updated_at)
    WHERE status IN ('sent', 'token_pruned', 'token_moved');
