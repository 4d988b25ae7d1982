CREATE TABLE herald_device_rates (
    token        text PRIMARY KEY,
    minute_start timestamptz NOT NULL,
    minute_count integer NOT NULL,
    hour_start   timestamptz NOT NULL,
    hour_count   integer NOT NULL,
    granted      integer NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX herald_device_rates_hour_start_idx ON herald_device_rates (hour_start);

DROP TABLE herald_device_counts;
