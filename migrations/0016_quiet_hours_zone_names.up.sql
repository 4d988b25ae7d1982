-- herald_quiet_until_strict read the user's time zone with AT TIME ZONE,
-- which looks a name up among Postgres's time zone abbreviations before its
-- zone database. "CET", "MET", "EET" and "WET" are both: IANA zones with
-- summer time (Go reads them so, and Set accepts them) and abbreviations of
-- fixed offsets (CET: +01:00 all year). So in summer the claim and the
-- relay placed those users' quiet hours an hour off, pushing through the
-- first hour of the night. A name holding a "/" is never an abbreviation,
-- and is still read with AT TIME ZONE, as is "UTC" (Set's default, the
-- same either way); any other is applied through the
-- session's TimeZone setting, which reads the zone database only, as Go
-- does (herald_quiet_until_zone). An unknown zone still fails with
-- invalid_parameter_value, which herald_quiet_until reads as UTC.
CREATE FUNCTION herald_quiet_until_zone(at timestamptz, tz text, qs time, qe time) RETURNS timestamptz
-- The SET clause puts the caller's setting back on return, and on error.
LANGUAGE plpgsql STABLE PARALLEL UNSAFE SET TimeZone = 'UTC' AS $$
DECLARE
    local timestamp;
BEGIN
    PERFORM set_config('TimeZone', tz, true);
    -- Casts between timestamp and timestamptz use the session's zone.
    local := at::timestamp;
    RETURN CASE
        WHEN qs < qe THEN CASE
            WHEN local::time >= qs AND local::time < qe THEN (local::date + qe)::timestamptz
            ELSE at END
        WHEN local::time >= qs THEN (local::date + 1 + qe)::timestamptz
        WHEN local::time < qe THEN (local::date + qe)::timestamptz
        ELSE at
    END;
END
$$;

CREATE OR REPLACE FUNCTION herald_quiet_until_strict(at timestamptz, tz text, qs time, qe time) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL UNSAFE AS $$
    SELECT CASE
        WHEN qs IS NULL OR qe IS NULL OR qs = qe THEN at
        WHEN strpos(tz, '/') = 0 AND tz <> 'UTC' THEN herald_quiet_until_zone(at, tz, qs, qe)
        WHEN qs < qe THEN CASE
            WHEN (at AT TIME ZONE tz)::time >= qs AND (at AT TIME ZONE tz)::time < qe
                THEN ((at AT TIME ZONE tz)::date + qe) AT TIME ZONE tz
            ELSE at END
        WHEN (at AT TIME ZONE tz)::time >= qs THEN ((at AT TIME ZONE tz)::date + 1 + qe) AT TIME ZONE tz
        WHEN (at AT TIME ZONE tz)::time < qe THEN ((at AT TIME ZONE tz)::date + qe) AT TIME ZONE tz
        ELSE at
    END
$$;
