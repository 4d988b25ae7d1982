-- Operations: the attempts of each delivery, for an operator's timeline and
-- the status's failures by FCM code, and a notification an operator
-- cancelled.
--
-- The delivery row keeps only its last attempt. Each failed attempt (retry
-- scheduled, failed for good, token pruned) is also logged here, in the
-- statement that records it; a successful attempt is not (it is the
-- delivery row itself), so sending costs no extra write. Rows go with their
-- delivery (housekeeping deletes deliveries by age).
CREATE TABLE herald_delivery_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES herald_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    outcome      text NOT NULL,
    error_code   text NOT NULL DEFAULT '',
    last_error   text NOT NULL DEFAULT '',
    attempted_at timestamptz NOT NULL
);
CREATE INDEX herald_delivery_attempts_delivery_idx ON herald_delivery_attempts (delivery_id);
-- The status reads the last hour's failures by code.
CREATE INDEX herald_delivery_attempts_at_idx ON herald_delivery_attempts (attempted_at);

-- A cancelled notification gets no new deliveries: the relay skips it and a
-- broadcast of it stops expanding.
ALTER TABLE herald_notifications ADD COLUMN cancelled_at timestamptz;
