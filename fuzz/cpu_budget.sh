#!/bin/bash
# Run fuzz target $1 until it has used $2 CPU-seconds (user + sys, default
# 600), then stop it with SIGINT so libFuzzer prints its final stats.
# Status lines go to logs/TARGET.log; CPU used so far to logs/TARGET.cpu, so
# a second call tops up. New inputs go to work/TARGET (merge them into
# corpus/TARGET afterwards with -merge=1). Build first with
# `cargo fuzz build -s none`.
set -u
T=$1
BUDGET=${2:-600}
cd "$(dirname "$0")"
BIN=target/x86_64-unknown-linux-gnu/release/$T
mkdir -p "work/$T" "artifacts/$T" logs
PREV=$(cat "logs/$T.cpu" 2>/dev/null || echo 0)
LEFT=$((BUDGET - PREV))
[ "$LEFT" -le 0 ] && exit 0
echo "start $(date -u +%T) prev=$PREV left=$LEFT load: $(cat /proc/loadavg)" >> "logs/$T.meta"
(
    ulimit -t $((LEFT + 30))
    exec nice -n 10 "$BIN" -max_total_time=100000 -timeout=120 -print_final_stats=1 \
        -artifact_prefix="artifacts/$T/" "work/$T" "corpus/$T"
) >> "logs/$T.log" 2>&1 &
PID=$!
TICKS=$(getconf CLK_TCK)
while kill -0 "$PID" 2>/dev/null; do
    sleep 5
    read -r -a F < "/proc/$PID/stat" 2>/dev/null || break
    USED=$(( (F[13] + F[14]) / TICKS ))
    echo $((PREV + USED)) > "logs/$T.cpu"
    if [ "$USED" -ge "$LEFT" ]; then kill -INT "$PID"; fi
done
wait "$PID"
RC=$?
echo "end $(date -u +%T) rc=$RC cpu_total=$(cat "logs/$T.cpu") load: $(cat /proc/loadavg)" >> "logs/$T.meta"
