DROP FUNCTION herald_quiet_until(timestamptz, text, time, time);
ALTER FUNCTION herald_quiet_until_strict(timestamptz, text, time, time) RENAME TO herald_quiet_until;
