DROP INDEX herald_deliveries_claimed_by_idx;
ALTER TABLE herald_deliveries DROP COLUMN claimed_by;
DROP TABLE herald_send_budget;
DROP TABLE herald_leader;
DROP TABLE herald_instances;
