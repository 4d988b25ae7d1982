#!/bin/bash
B=/tmp/herald-final
cd /tmp
run() { echo "== $* load $(cut -d' ' -f1 /proc/loadavg) at $(date +%T)"; "$@" 2>/dev/null | tail -1; }
run $B bench personalised -n 100000 -pgstats
run $B bench personalised -n 100000
run $B bench personalised -n 100000 -inflight 256
run $B bench broadcast -tokens 1000000 -inflight 256
run $B bench backlog
run $B bench latency-sweep -n 40000
echo "== RegisterMany load $(cut -d' ' -f1 /proc/loadavg)"; (cd /work/main && go test -run '^$' -bench BenchmarkRegisterMany -benchtime 1x ./app/ 2>&1 | grep -E "^Benchmark")
echo done
