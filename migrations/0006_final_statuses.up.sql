-- Final statuses for the product features and operator actions: a delivery
-- whose notification expired before it could be pushed (expired), one
-- replaced by a newer notification with the same collapse key before it was
-- pushed (superseded), one an operator cancelled (cancelled), and one whose
-- notification type the recipient muted for push after it was expanded
-- (muted). None of them was pushed; all are final.
ALTER TABLE herald_deliveries DROP CONSTRAINT herald_deliveries_status_check;
ALTER TABLE herald_deliveries ADD CONSTRAINT herald_deliveries_status_check CHECK (status IN
    ('pending', 'claimed', 'sent', 'retry_scheduled', 'token_pruned', 'token_moved', 'failed',
     'expired', 'superseded', 'cancelled', 'muted'));

DROP INDEX herald_deliveries_finished_idx;
CREATE INDEX herald_deliveries_finished_idx ON herald_deliveries (updated_at)
    WHERE status IN ('sent', 'token_pruned', 'token_moved', 'expired', 'superseded', 'cancelled', 'muted');
