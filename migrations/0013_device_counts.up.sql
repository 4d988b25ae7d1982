-- herald_device_counts replaces herald_device_rates: the same per-device
-- minute and hour windows, keyed by a 64-bit hash of the device token
-- (hashtextextended(token, 0)) instead of the token itself. A claim upserts
-- one row per device it claims for; on 8-byte keys that upsert, the claim's
-- per-device ranking and the lock order cost less than on tokens of 150-200
-- bytes, and the table no longer holds a copy of any token. Two tokens
-- whose hashes collide share one count, so each gets fewer pushes in a
-- window, never more. Counts start afresh: at most one extra window's worth
-- for a device pushed to across the upgrade.
CREATE TABLE herald_device_counts (
    device       bigint PRIMARY KEY,
    minute_start timestamptz NOT NULL,
    minute_count integer NOT NULL,
    hour_start   timestamptz NOT NULL,
    hour_count   integer NOT NULL,
    -- How many pushes the last claim was granted.
    granted      integer NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX herald_device_counts_hour_start_idx ON herald_device_counts (hour_start);

DROP TABLE herald_device_rates;
