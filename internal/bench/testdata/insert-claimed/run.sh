#!/bin/sh
# Measures Herald's Expand and claim against an Expand that inserts claimed and a pickup
# (BENCHMARKS.md, "Inserting deliveries claimed"). Needs a migrated scratch database:
#   DATABASE_URL=postgres://... herald migrate;  PSQL="psql -h HOST -p PORT -U USER DB" ./run.sh
set -e
cd "$(dirname "$0")"
python3 make.py
$PSQL -q -f setup.sql
$PSQL -q -c "DROP TABLE IF EXISTS xp_nb; CREATE TABLE xp_nb AS SELECT id, row_number() OVER (ORDER BY created_at) AS rn FROM herald_notifications"
$PSQL -q -At -f run.sql | python3 summarise.py
rm -f claim.sql expand.sql expandc.sql run.sql
