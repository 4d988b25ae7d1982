-- Preferences, urgent notifications and per-device limits.
--
-- herald_preferences: per user, the notification types muted for push
-- (they still reach the inbox) and quiet hours in the user's IANA time
-- zone. The relay reads them when it expands a notification, and the claim
-- reads them again just before the push, through this small table's
-- primary key: users without preferences have no row and cost one failed
-- index probe.
CREATE TABLE herald_preferences (
    user_id     text PRIMARY KEY,
    muted       text[] NOT NULL DEFAULT '{}',
    quiet_start time,
    quiet_end   time,
    time_zone   text NOT NULL DEFAULT 'UTC',
    updated_at  timestamptz NOT NULL,
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    CHECK (quiet_start IS NULL OR quiet_start <> quiet_end)
);

-- An urgent notification bypasses its recipient's quiet hours (not mutes).
ALTER TABLE herald_notifications ADD COLUMN urgent boolean NOT NULL DEFAULT false;

-- herald_quiet_until returns when a push due at "at" may go out under quiet
-- hours from qs to qe (local times in time zone tz; qs > qe crosses
-- midnight): "at" itself outside the window, else the window's end. With no
-- quiet hours (qs NULL) it returns "at". A local end time that does not
-- exist (a daylight-saving gap) is read as Postgres reads it, an hour on.
CREATE FUNCTION herald_quiet_until(at timestamptz, tz text, qs time, qe time) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN qs IS NULL OR qe IS NULL OR qs = qe THEN at
        WHEN qs < qe THEN CASE
            WHEN (at AT TIME ZONE tz)::time >= qs AND (at AT TIME ZONE tz)::time < qe
                THEN ((at AT TIME ZONE tz)::date + qe) AT TIME ZONE tz
            ELSE at END
        WHEN (at AT TIME ZONE tz)::time >= qs THEN ((at AT TIME ZONE tz)::date + 1 + qe) AT TIME ZONE tz
        WHEN (at AT TIME ZONE tz)::time < qe THEN ((at AT TIME ZONE tz)::date + qe) AT TIME ZONE tz
        ELSE at
    END
$$;

-- herald_device_rates counts the pushes claimed for each device token in
-- its current minute and hour windows (each starts at the first push
-- counted after the previous one ended), so that no device gets more than
-- its limits, whichever sender pushes. The claim upserts one row per token
-- it claims for, in token order; housekeeping deletes rows whose hour
-- window ended.
CREATE TABLE herald_device_rates (
    token        text PRIMARY KEY,
    minute_start timestamptz NOT NULL,
    minute_count integer NOT NULL,
    hour_start   timestamptz NOT NULL,
    hour_count   integer NOT NULL,
    -- How many pushes the last claim was granted.
    granted      integer NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX herald_device_rates_hour_start_idx ON herald_device_rates (hour_start);

-- Inbox retention (off by default) finds old notifications through this
-- BRIN index: notifications are inserted in creation order, so it stays a
-- few pages and costs Raise next to nothing.
CREATE INDEX herald_notifications_created_brin ON herald_notifications USING brin (created_at);
