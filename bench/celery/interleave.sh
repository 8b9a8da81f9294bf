#!/usr/bin/env bash
# Interleaved rounds: `warren-bench python-worker` (Rust and Python worker),
# `warren-bench fanout` (for the scheduler's CPU),
# then Celery's fan-out with the prefork, threads and gevent pools, ROUNDS
# times, on the same broker within the same minutes. Every figure lands in
# $OUT (one warren-<round>.json per round, celery.jsonl for Celery), the
# load average before each run in $OUT/load.txt.
#
#   WARREN_BENCH=target/release/warren-bench PYTHON=/tmp/celery-venv/bin/python \
#     bench/celery/interleave.sh 3 /tmp/celerybench
#
# PYTHON must have `celery[redis]` and the Warren SDK (clients/python)
# installed; it is also the bench's WARREN_BENCH_PYTHON. A run that fails
# (e.g. the broker restarted under it) is retried once.
set -u
ROUNDS=${1:-3}
OUT=${2:-/tmp/celerybench}
WARREN_BENCH=${WARREN_BENCH:-target/release/warren-bench}
PYTHON=${PYTHON:-python3}
POOLS=${POOLS:-"prefork:2 threads:256 gevent:256"}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"

retry() {
    "$@" && return 0
    echo "failed, retrying once: $*" >&2
    sleep 15
    "$@"
}

for r in $(seq 1 "$ROUNDS"); do
    echo "round $r warren $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load.txt"
    retry env WARREN_BENCH_PYTHON="$PYTHON" "$WARREN_BENCH" python-worker \
        --json "$OUT/warren-$r.json" > "$OUT/warren-$r.txt" 2>&1
    # Warren's fan-out with its Rust worker, for the scheduler's and the
    # broker's CPU per task (python-worker reports only the workers').
    echo "round $r warren-fanout $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load.txt"
    retry "$WARREN_BENCH" fanout --json "$OUT/fanout-$r.json" > "$OUT/fanout-$r.txt" 2>&1
    for p in $POOLS; do
        echo "round $r celery ${p%%:*} $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/load.txt"
        retry "$PYTHON" "$HERE/fanout.py" --pool "${p%%:*}" --concurrency "${p##*:}" \
            --json "$OUT/celery.jsonl"
    done
done
