CREATE OR REPLACE FUNCTION herald_quiet_until_strict(at timestamptz, tz text, qs time, qe time) RETURNS timestamptz
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
DROP FUNCTION herald_quiet_until_zone(timestamptz, text, time, time);
