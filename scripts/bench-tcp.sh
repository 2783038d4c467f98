#!/usr/bin/env bash
# tcp-core in memory (BENCHMARKS.md, "tcp-core in memory"): builds the two bench targets of
# netpop-benches in release mode, then
#   1. runs `tcp_compare`: tcp-core and smoltcp in memory and the Linux kernel over loopback,
#      on one pinned CPU — short connections per second (1 and 1,000 in flight) and bulk
#      Gbit/s, medians of 3 rounds, with the ratios and the issue's targets;
#   2. runs `tcp_lifecycles` under callgrind for instructions per connection lifecycle,
#      (Ir(N) - Ir(0)) / N with N = 1000 one at a time and N = 5000 with 1,000 at a time
#      (the steady state, not just the ramp-up), for tcp-core and smoltcp,
#      and prints tcp-core's costliest functions per lifecycle (exclusive, inlined code
#      summed into the function it was inlined into).
# About 1.5 minutes on the 2-vCPU VM. Needs valgrind for part 2 (skipped without it).
#
#   scripts/bench-tcp.sh                       everything
#   scripts/bench-tcp.sh --quick               one short round, smaller bulk (a smoke test)
#   scripts/bench-tcp.sh --no-callgrind        part 1 only
#   scripts/bench-tcp.sh --only-callgrind      part 2 only
#   other options go to tcp_compare: --rounds N --window S --warmup S --bulk-mib N
#                                    --concurrency 1,1000 --only tcp-core,smoltcp,linux --cpu N
set -euo pipefail
cd "$(dirname "$0")/.."

compare_args=()
run_compare=1
run_callgrind=1
for arg in "$@"; do
    case "$arg" in
        --no-callgrind) run_callgrind=0 ;;
        --only-callgrind) run_compare=0 ;;
        *) compare_args+=("$arg") ;;
    esac
done

# The path of a bench target's executable, building it if needed.
bench_exe() {
    cargo bench -p netpop-benches --bench "$1" --no-run --message-format=json 2>/dev/null |
        jq -r --arg name "$1" 'select(.target.name? == $name and .executable != null) | .executable' |
        tail -n 1
}

cargo bench -p netpop-benches --bench tcp_compare --bench tcp_lifecycles --no-run --quiet
compare=$(bench_exe tcp_compare)
lifecycles=$(bench_exe tcp_lifecycles)
smoltcp_version=$(awk '/^name = "smoltcp"/{getline; gsub(/[^0-9.]/, ""); print}' Cargo.lock)

echo "# tcp-core in memory — $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)," \
    "smoltcp $smoltcp_version, Linux $(uname -r), $(nproc) CPUs"
echo

if [[ $run_compare == 1 ]]; then
    "$compare" "${compare_args[@]}"
fi

if [[ $run_callgrind == 0 ]]; then
    exit 0
fi
if ! command -v valgrind >/dev/null; then
    echo "valgrind not installed: instructions per connection skipped (apt-get install -y valgrind)"
    exit 0
fi

n=1000
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Instructions (Ir) of one run under callgrind; the run must succeed.
instructions() {
    local name=$1
    shift
    if ! valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" "$lifecycles" "$@" \
        >"$out/$name.log" 2>&1; then
        echo "tcp_lifecycles $* failed under callgrind:" >&2
        cat "$out/$name.log" >&2
        exit 1
    fi
    awk '/^summary:/ {print $2}' "$out/$name.out"
}

echo "Instructions per connection lifecycle (callgrind, virtual time):"
echo
echo "| stack | at a time | N | Ir, N lifecycles | Ir, N = 0 | Ir per lifecycle |"
echo "|---|---:|---:|---:|---:|---:|"
for stack in tcp-core smoltcp; do
    for c in 1 1000; do
        # With 1,000 in flight, N = 1,000 would only measure the ramp-up (every connection
        # open at once); five rounds of the whole set measure the steady state.
        runs=$n
        [[ $c -gt 1 ]] && runs=$((5 * c))
        base=$(instructions "$stack-$c-0" --stack "$stack" --concurrency "$c" --connections 0)
        full=$(instructions "$stack-$c-$runs" --stack "$stack" --concurrency "$c" --connections "$runs")
        printf '| %s | %s | %s | %s | %s | %s |\n' "$stack" "$c" "$runs" "$full" "$base" $(((full - base) / runs))
    done
done
echo

echo "tcp-core, 1 at a time: costliest functions, instructions per lifecycle (exclusive):"
echo
echo "| Ir per lifecycle | share | function |"
echo "|---:|---:|---|"
callgrind_annotate --auto=no --threshold=100 "$out/tcp-core-1-$n.out" 2>/dev/null |
    awk -v n="$n" '
        # Lines look like "  1,234 ( 5.6%)  file:function [object]"; inlined code shows up
        # under the file it came from, so sum by function.
        match($0, /^ *[0-9,]+ \( *[0-9.]+%\)  /) {
            ir = substr($0, 1, RLENGTH); sub(/\(.*/, "", ir); gsub(/[ ,]/, "", ir)
            rest = substr($0, RLENGTH + 1)
            if (rest ~ /PROGRAM TOTALS/) { total = ir; next }
            sub(/ \[[^]]*\]$/, "", rest)
            fn = rest; sub(/^[^:]*:/, "", fn)
            sum[fn] += ir
        }
        END { for (f in sum) printf "%d\t%.1f%%\t%s\n", sum[f] / n, 100 * sum[f] / total, f }
    ' | sort -rn | head -n 20 |
    awk -F'\t' '{ f = $3; gsub(/\|/, "\\|", f); printf "| %s | %s | `%s` |\n", $1, $2, f }'
