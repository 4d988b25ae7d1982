-- herald_quiet_until reads a time zone Postgres does not know as UTC instead
-- of failing. Set refuses such a zone, but a row written around it (by hand,
-- by a restore) or a zone the server's zone database has since lost made
-- every call fail: the claim calls it for each due delivery of a user with
-- quiet hours, in one statement for many users, so one such row stopped the
-- claim of every delivery, for good. The exception block costs a
-- subtransaction per call, and only users with quiet hours reach it. That
-- makes it parallel unsafe: Postgres refuses a subtransaction in a parallel
-- operation, so declared safe it failed every query given a parallel plan
-- (Herald's own statements write, and never get one; a host's may).
ALTER FUNCTION herald_quiet_until(timestamptz, text, time, time) RENAME TO herald_quiet_until_strict;

CREATE FUNCTION herald_quiet_until(at timestamptz, tz text, qs time, qe time) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL UNSAFE AS $$
BEGIN
    RETURN herald_quiet_until_strict(at, tz, qs, qe);
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN herald_quiet_until_strict(at, 'UTC', qs, qe);
END
$$;
