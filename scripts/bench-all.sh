#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md in one command, then its plots:
#   1. builds the benchmark binaries once (release);
#   2. runs, one after the other, each with a time cap and all within BUDGET seconds:
#        scripts/bench-pktio.sh --json     -> bench-results/pktio.json
#        scripts/bench-loadgen.sh          -> bench-results/loadgen.txt -> loadgen.json
#        scripts/bench-tcp.sh --no-callgrind, then --only-callgrind
#                                          -> bench-results/tcp.txt, tcp-callgrind.txt -> tcp.json
#        scripts/bench-e2e.sh --json       -> bench-results/e2e.json      (when it exists)
#        scripts/bench-balance.sh --json   -> bench-results/balance.json  (when it exists)
#      and records for each `<name>.meta.json` (command, date, commit, machine, load
#      average, seconds) and its stderr in `<name>.log`;
#   3. draws docs/bench/<name>.svg from every result (`plot render`).
# A benchmark that fails, times out or is skipped keeps its previous result and figure.
# loadgen and the veth parts of pktio need root; the e2e and balance scripts need whatever
# they need (see each script).
#
#   scripts/bench-all.sh                    everything (2 minutes for pktio, loadgen and tcp on
#                                           the 2-vCPU VM, plus builds; at most BUDGET)
#   scripts/bench-all.sh pktio tcp          only these benchmarks (then all plots)
#   BUDGET=600 scripts/bench-all.sh         a tighter total bound in seconds (default 900)
#   scripts/bench-all.sh --plots-only       redraw docs/bench from bench-results only
set -euo pipefail
cd "$(dirname "$0")/.."

BUDGET="${BUDGET:-900}"
RESULTS="${RESULTS:-bench-results}"
OUT="${OUT:-docs/bench}"
# Kept back from the budget for drawing the plots at the end.
PLOT_RESERVE=20

selected=()
plots_only=0
for arg in "$@"; do
    case "$arg" in
        --plots-only) plots_only=1 ;;
        pktio | loadgen | tcp | e2e | balance) selected+=("$arg") ;;
        -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) echo "bench-all: unknown argument $arg (pktio|loadgen|tcp|e2e|balance|--plots-only)" >&2; exit 2 ;;
    esac
done
wanted() { [[ ${#selected[@]} == 0 ]] || [[ " ${selected[*]} " == *" $1 "* ]]; }

mkdir -p "$RESULTS" "$OUT"
started=$SECONDS
log() { printf '[bench-all %4ds] %s\n' "$((SECONDS - started))" "$*"; }

cargo build --release --quiet -p netpop-benches --bins
PLOT="$PWD/target/release/plot"
# bench-tcp.sh builds its bench targets itself, but on a busy machine that build alone can
# take minutes; doing it here keeps it out of the tcp run's time cap.
if [[ $plots_only == 0 ]] && wanted tcp; then
    log "building the bench targets (release)"
    cargo bench -p netpop-benches --bench tcp_compare --bench tcp_lifecycles --no-run --quiet 2>/dev/null
fi

# The same for the balancing benchmark: bench-balance.sh runs a release build of the
# flowgroups tests, which would otherwise count against its cap.
if [[ $plots_only == 0 ]] && wanted balance && [[ -x scripts/bench-balance.sh ]]; then
    log "building the flowgroups balancing bench (release)"
    cargo test --release --quiet -p flowgroups --test netpop_live --no-run 2>/dev/null
fi

render() {
    log "drawing $OUT/*.svg from $RESULTS/"
    "$PLOT" render --results "$RESULTS" --out "$OUT"
}
if [[ $plots_only == 1 ]]; then
    render
    exit
fi

# --- what every figure's footer says about the run ------------------------------------------
json_string() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
grep -qw hypervisor /proc/cpuinfo && cpu_model="$cpu_model (VM)"
mem_gib=$(awk '/^MemTotal:/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
machine="$(nproc) CPUs, ${cpu_model:-unknown CPU}, $mem_gib GiB, Linux $(uname -r)"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"

write_meta() { # name command date seconds load
    printf '{"command":%s,"date":%s,"commit":%s,"machine":%s,"load_average":%s,"seconds":%s}\n' \
        "$(json_string "$2")" "$(json_string "$3")" "$(json_string "$commit")" \
        "$(json_string "$machine")" "$(json_string "$5")" "$4" >"$RESULTS/$1.meta.json"
}

summary=()

# run NAME CAP OUT COMMAND...: runs COMMAND for at most CAP seconds (less if the budget is
# running out); on success its stdout becomes $RESULTS/OUT and the run's metadata
# $RESULTS/NAME.meta.json. On failure the previous OUT is kept and run returns non-zero.
run() {
    local name=$1 cap=$2 out="$RESULTS/$3"
    shift 3
    local left=$((BUDGET - PLOT_RESERVE - (SECONDS - started)))
    if ((left < 30)); then
        log "$name: skipped, the ${BUDGET} s budget is spent"
        summary+=("$name: skipped (out of time)")
        return 1
    fi
    ((cap > left)) && cap=$left
    local load date t0=$SECONDS status=0
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    date=$(date -u '+%Y-%m-%d %H:%M UTC')
    log "$name: $* (at most $cap s; load average $load)"
    timeout --kill-after=15 "$cap" "$@" >"$out.new" 2>"$RESULTS/$name.log" || status=$?
    local took=$((SECONDS - t0))
    if [[ $status != 0 ]]; then
        local why="exit status $status"
        [[ $status == 124 || $status == 137 ]] && why="stopped at the $cap s cap"
        log "$name: failed ($why) — previous result kept; stderr in $RESULTS/$name.log:"
        tail -n 5 "$RESULTS/$name.log" | sed 's/^/    /'
        rm -f "$out.new"
        summary+=("$name: FAILED ($why), ${took} s")
        return 1
    fi
    mv "$out.new" "$out"
    write_meta "$name" "$*" "$date" "$took" "$load"
    log "$name: done in $took s"
    summary+=("$name: ok, ${took} s")
}

# A script from another part of the project that may not exist yet, or may lack --json.
run_optional() {
    local name=$1 cap=$2 script=$3
    if [[ ! -x $script ]]; then
        log "$name: $script does not exist yet, skipped"
        summary+=("$name: no $script")
    elif ! grep -q -- '--json' "$script"; then
        log "$name: $script has no --json mode yet, skipped"
        summary+=("$name: $script has no --json")
    else
        run "$name" "$cap" "$name.json" "$script" --json || true
    fi
}

as_root=0
[[ $(id -u) == 0 ]] && as_root=1

if wanted pktio; then
    run pktio 150 pktio.json scripts/bench-pktio.sh --json || true
fi
if wanted loadgen; then
    if [[ $as_root == 1 ]]; then
        if run loadgen 150 loadgen.txt scripts/bench-loadgen.sh; then
            "$PLOT" convert loadgen "$RESULTS/loadgen.txt" >"$RESULTS/loadgen.json"
        fi
    else
        log "loadgen: needs root (network namespaces), skipped"
        summary+=("loadgen: skipped (needs root)")
    fi
fi
if wanted tcp; then
    # Two runs, so that a slow callgrind part on a busy machine cannot cost the comparison
    # its figures; the instruction counts do not depend on the load, only their run time.
    compared=0
    counted=0
    run tcp 240 tcp.txt scripts/bench-tcp.sh --no-callgrind && compared=1
    run tcp-callgrind 360 tcp-callgrind.txt scripts/bench-tcp.sh --only-callgrind && counted=1
    if [[ -f $RESULTS/tcp.txt ]]; then
        inputs=("$RESULTS/tcp.txt")
        [[ -f $RESULTS/tcp-callgrind.txt ]] && inputs+=("$RESULTS/tcp-callgrind.txt")
        cat "${inputs[@]}" | "$PLOT" convert tcp >"$RESULTS/tcp.json"
        if [[ $compared == 1 && $counted == 1 ]]; then
            sed -i 's|"command":"scripts/bench-tcp.sh --no-callgrind"|"command":"scripts/bench-tcp.sh --no-callgrind, then scripts/bench-tcp.sh --only-callgrind"|' \
                "$RESULTS/tcp.meta.json"
        fi
    fi
fi
wanted e2e && run_optional e2e 300 scripts/bench-e2e.sh
wanted balance && run_optional balance 240 scripts/bench-balance.sh

render
log "finished in $((SECONDS - started)) s:"
printf '    %s\n' "${summary[@]}"
