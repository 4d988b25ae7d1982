#!/usr/bin/env python3
"""Reads run.sql's output on stdin and prints each statement's cost per delivery."""
import json, re, sys
parts = re.split(r'^MARK (\w+) (\d+)$', sys.stdin.read(), flags=re.M)
agg = {}
for k in range(1, len(parts), 3):
    name, b, body = parts[k], int(parts[k+1]), parts[k+2]
    j = json.loads(body[:body.rindex(']')+1])[0]; p = j['Plan']
    if b <= 4:
        continue  # warm-up
    a = agg.setdefault(name, [0]*5)
    for i, v in enumerate([p['Shared Hit Blocks'] + p['Shared Read Blocks'], p['WAL Records'], p['WAL Bytes'], j['Execution Time'], 1]):
        a[i] += v
names = {'P1': 'now: Expand (pending)', 'P2': 'now: claim', 'C1': 'claimed: Expand', 'C2': 'claimed: pickup'}
for n, a in sorted(agg.items()):
    rows = a[4] * 500
    print(f"{names[n]:24} buffers {a[0]/rows:5.1f}  wal records {a[1]/rows:5.2f}  wal bytes {a[2]/rows:5.0f}  exec us {a[3]/rows*1000:5.1f}")
