#!/usr/bin/env python3
"""Writes claim.sql, expand.sql and expandc.sql from Herald's own statements
(adapters/delivery_postgres_repository.go), then run.sql, which measures them
and the pickup. See BENCHMARKS.md, "Inserting deliveries claimed"."""
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
src = open(os.path.join(here, '../../../../adapters/delivery_postgres_repository.go')).read()
def out(name, text):
    open(os.path.join(here, name), 'w').write(text)
i = src.index("const claimSQL = `") + len("const claimSQL = `"); j = src.index("`", i)
out('claim.sql', "PREPARE claim(int, bigint, uuid, uuid, int, int) AS\n" + src[i:j] + ";\n")
i = src.index("WITH ns AS MATERIALIZED ("); j = src.index("`,\n\t\tuuidArray(notificationIDs), share, deliveriesChannel, ExpandChunkSize)")
sql = src[i:j]
out('expand.sql', "PREPARE expand(uuid[], int, text, int) AS\n" + sql + ";\n")
c = sql
for old, new in [
    ("""error_code, last_error)
			SELECT notification_id, token, CASE WHEN muted THEN 'muted' ELSE 'pending' END, push_at, now(), now(),""",
     """error_code, last_error, claim_id, claimed_by)
			SELECT notification_id, token, CASE WHEN muted THEN 'muted' ELSE 'claimed' END, now() + interval '30 seconds', now(), now(),"""),
    ("""ELSE '' END
			FROM picked WHERE rn <= $2""", """ELSE '' END, $5::uuid, $6::uuid
			FROM picked WHERE rn <= $2"""),
    ("RETURNING 1\n\t\t), newest", "RETURNING id, notification_id, token\n\t\t), newest"),
]:
    if old not in c:
        sys.exit("the Expand statement changed: update make.py")
    c = c.replace(old, new, 1)
k = c.index("		-- The signal is delivered at commit")
c = c[:k] + """		SELECT cr.id, cr.token, n.title, n.body, n.data, n.ttl_seconds, n.expires_at, n.options, n.trace_parent, counts.created
		FROM created cr JOIN herald_notifications n ON n.id = cr.notification_id, counts"""
out('expandc.sql', "PREPARE expandc(uuid[], int, text, int, uuid, uuid) AS\n" + c + ";\n")
lines = [open(os.path.join(here, f + '.sql')).read() for f in ['claim', 'expand', 'expandc', 'pickup']]
ex = "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) "
for b in range(1, 31):
    lines.append(f"SELECT array_agg(id)::text AS ids FROM xp_nb WHERE rn > {(b-1)*500} AND rn <= {b*500} \\gset")
    if b % 2:
        lines += [f"\\echo MARK P1 {b}", ex + "EXECUTE expand(:'ids', 8, 'x', 5000);",
                  "BEGIN;", "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true) \\g /dev/null",
                  f"\\echo MARK P2 {b}", ex + "EXECUTE claim(500, 30000000, gen_random_uuid(), '11111111-1111-1111-1111-111111111111', 240, 5000);", "COMMIT;"]
    else:
        cl = f"22222222-2222-2222-2222-22222222{b:04d}"
        lines += [f"\\echo MARK C1 {b}", ex + f"EXECUTE expandc(:'ids', 8, 'x', 5000, '{cl}', '11111111-1111-1111-1111-111111111111');",
                  f"SELECT array_agg(d.id)::text AS dids FROM herald_deliveries d WHERE d.claim_id = '{cl}' \\gset",
                  f"\\echo MARK C2 {b}", ex + f"EXECUTE pickup(:'dids', '{cl}', 240, 5000);"]
    lines.append("UPDATE herald_deliveries SET status='sent', claim_id=NULL, claimed_by=NULL, updated_at=now() WHERE status='claimed';")
out('run.sql', "\n".join(lines) + "\n")
