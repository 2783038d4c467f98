#!/usr/bin/env bash
# Flow-group balancing under skewed load (see BENCHMARKS.md, "Flow-group balancing"):
# for each balancer policy (off, idle, live) starts a fresh `netpop up --nic sim --queues 2
# --wire unix:...` (unprivileged), puts a long-lived checksummed stream into each of the
# 64 flow groups instance 0 owns at start plus short connections (connect, 4 bytes echoed,
# close) into the same groups, and after a warm-up measures per-instance received packets
# and the short connections' connect-to-echo latency (p50, p99, max), with the moves the
# balancer completed and the connections that migrated. Prints one Markdown table, or with
# --json the same figures as JSON (the sweep shape `plot` draws: one point per policy with
# `requests_per_s` and `p99_ms` of the short connections, and every table column beside them).
#
#   scripts/bench-balance.sh                          3 s warm-up, 10 s measured
#   scripts/bench-balance.sh --json                   JSON on stdout (scripts/bench-all.sh balance)
#   WARMUP=5 MEASURE=20 CONCURRENCY=32 scripts/bench-balance.sh
#   STREAM_RATE=65536 scripts/bench-balance.sh        bytes/s per long-lived stream
set -euo pipefail
cd "$(dirname "$0")/.."

json=0
for arg in "$@"; do
    case "$arg" in
        --json) json=1 ;;
        -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) echo "bench-balance: unknown argument $arg (--json)" >&2; exit 2 ;;
    esac
done

export BENCH_WARMUP_S="${WARMUP:-3}"
export BENCH_MEASURE_S="${MEASURE:-10}"
export BENCH_CONCURRENCY="${CONCURRENCY:-16}"
export BENCH_STREAM_RATE="${STREAM_RATE:-32768}"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if [[ $json == 0 ]]; then
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# warm-up ${BENCH_WARMUP_S} s, measured ${BENCH_MEASURE_S} s, ${BENCH_CONCURRENCY} short connections at a time, 64 streams at ${BENCH_STREAM_RATE} B/s"
fi
# Release build: the figures are for an optimised netpop (the test profile is opt-level 1).
cargo test --release --quiet -p flowgroups --test netpop_live -- --ignored --exact bench_balance \
    --nocapture --test-threads=1 >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
if [[ $json == 1 ]]; then
    # Also on stderr, so that bench-all.sh's log of the run keeps the Markdown table.
    grep '^BENCH ' "$log" | sed 's/^BENCH //' >&2
    grep '^BENCH_JSON ' "$log" | sed 's/^BENCH_JSON //'
else
    grep '^BENCH ' "$log" | sed 's/^BENCH //'
fi
