#!/bin/sh
# The floor of Herald's data model (BENCHMARKS.md, "The floor of one row per delivery"):
# Postgres CPU per delivery for the bare writes of 100,000 personalised deliveries.
# Needs a migrated scratch database on this machine (it reads the backend's CPU in /proc):
#   DATABASE_URL=postgres://... herald migrate;  PSQL="psql -h HOST -p PORT -U USER DB" ./run.sh
# It empties herald_notifications and herald_deliveries.
set -e
cd "$(dirname "$0")"
FLOOR_PIDFILE=$(mktemp)
export FLOOR_PIDFILE
chmod a+r "$FLOOR_PIDFILE"
$PSQL -q -X -v pidfile="$FLOOR_PIDFILE" -f floor.sql | awk -v hz="$(getconf CLK_TCK)" '
	/^[a-z]+ [0-9]+$/ { if ($1 in start) { us = ($2 - start[$1]) / hz * 1e6 / 100000; printf "%-14s %5.1f µs a delivery\n", $1, us; total += us } else start[$1] = $2 }
	END { printf "%-14s %5.1f µs a delivery\n", "total", total }'
rm -f "$FLOOR_PIDFILE"
