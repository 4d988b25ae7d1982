#!/bin/bash
# Issue 12's commands, each alone, one after the other, with the load
# average before each: HERALD=/tmp/herald ./finalbench.sh > out 2>&1
# (build it first: go build -o /tmp/herald ./cmd/herald).
B=${HERALD:-/tmp/herald}
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
run() { echo "== $* load $(cut -d' ' -f1 /proc/loadavg) at $(date +%T)"; "$@" 2>/dev/null | tail -1; }
run "$B" bench personalised -n 100000 -pgstats
run "$B" bench personalised -n 100000
run "$B" bench personalised -n 100000 -inflight 256
run "$B" bench broadcast -tokens 1000000 -inflight 256
run "$B" bench backlog
run "$B" bench latency-sweep -n 40000
echo "== RegisterMany load $(cut -d' ' -f1 /proc/loadavg)"
(cd "$root" && go test -run '^$' -bench BenchmarkRegisterMany -benchtime 1x ./app/ 2>&1 | grep -E "^Benchmark")
