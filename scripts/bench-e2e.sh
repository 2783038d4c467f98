#!/usr/bin/env bash
# End-to-end benchmark (BENCHMARKS.md "End to end"; issue 6 part 4): Debian's lighttpd and
# Apache (mpm_prefork), unmodified, serving a 4-byte file, one request per connection, at
# concurrency 100 and 1,000, on
#   - netpop, the 82599 model with a TAP wire   (--nic sim),  1 and 2 instances;
#   - netpop, AF_XDP on a veth pair              (--nic afxdp), 1 and 2 instances;
#   - the Linux stack, the same server in a namespace behind a veth pair.
# The load generator (benches: loadgen) runs in a client namespace at the far end of each
# path. For every run: requests/s, failed requests, p50/p99 latency, and CPU-seconds per
# 100k connections of every process involved: the netpop plane and instances and every
# server process (utime+stime from /proc/<pid>/stat, with the time of children that exited,
# before and after the run) plus the load generator (its rusage, from bash's `time`).
# Kernel work done in softirq context outside these processes is not counted on either
# side (see BENCHMARKS.md).
#
#   scripts/bench-e2e.sh                  the whole matrix, a table on stdout
#   scripts/bench-e2e.sh --json           the same, JSON on stdout (the table on stderr)
#   DURATION=10 scripts/bench-e2e.sh      seconds of load per run (default 4, after 1 s warm-up)
#   SERVERS="lighttpd" STACKS="linux sim" INSTANCES="2" CONCURRENCY="100" scripts/bench-e2e.sh
#
# Needs root (namespaces, TAP, AF_XDP), lighttpd, apache2, ethtool. Everything it creates
# is removed on exit. About 3 minutes for the whole matrix on the 2-vCPU VM.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

json=0
for arg in "$@"; do
    case "$arg" in
        --json) json=1 ;;
        -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
        *) echo "bench-e2e: unknown argument $arg" >&2; exit 2 ;;
    esac
done
DURATION="${DURATION:-4}"
WARMUP="${WARMUP:-1}"
SERVERS="${SERVERS:-lighttpd apache-prefork}"
STACKS="${STACKS:-linux sim afxdp}"
INSTANCES="${INSTANCES:-1 2}"
CONCURRENCY="${CONCURRENCY:-100 1000}"
# Socket slots per app segment: lighttpd holds all 1,000 connections in one process.
APP_SOCKETS="${APP_SOCKETS:-4096}"

say() { echo "$@" >&2; }
[ "$(id -u)" = 0 ] || { say "bench-e2e: needs root (network namespaces, TAP, AF_XDP)"; exit 1; }
for tool in lighttpd apache2 ethtool ip; do
    command -v "$tool" >/dev/null || { say "bench-e2e: $tool not found (apt-get install lighttpd apache2 ethtool iproute2)"; exit 1; }
done

cargo build --release --quiet -p flowgroups --bin netpop -p shim-posix --lib -p netpop-benches --bin loadgen
NETPOP="$PWD/target/release/netpop"
SHIM="$PWD/target/release/libnetpop_shim.so"
LOADGEN="$PWD/target/release/loadgen"
HZ=$(getconf CLK_TCK)

# --- scratch, namespaces, cleanup -----------------------------------------------------------
tag="npb$$"
client_ns="${tag}c"
server_ns="${tag}s"
work="$(mktemp -d)"
chmod 755 "$work"
np_name=""
server_pid=""
np_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
stop_netpop() {
    if [ -n "$np_pid" ]; then
        "$NETPOP" down --name "$np_name" --socket-dir "$work" --grace 2 >/dev/null 2>&1 || true
        for _ in $(seq 100); do kill -0 "$np_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$np_pid" 2>/dev/null || true
        wait "$np_pid" 2>/dev/null || true
        np_pid=""
    fi
    ip link delete "${tag}x" 2>/dev/null || true
}
cleanup() {
    stop_server
    stop_netpop
    ip netns delete "$client_ns" 2>/dev/null || true
    ip netns delete "$server_ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$client_ns"
ip netns add "$server_ns"
for ns in "$client_ns" "$server_ns"; do ip -n "$ns" link set lo up; done
# The Linux path: client <-veth-> server namespace.
ip link add "${tag}a" type veth peer name "${tag}b"
ip link set "${tag}a" netns "$client_ns"
ip link set "${tag}b" netns "$server_ns"
ip -n "$client_ns" addr add 10.83.0.1/24 dev "${tag}a"
ip -n "$server_ns" addr add 10.83.0.2/24 dev "${tag}b"
ip -n "$client_ns" link set "${tag}a" up
ip -n "$server_ns" link set "${tag}b" up
linux_ip=10.83.0.2

mkdir -p "$work/www"
printf 'abc\n' > "$work/www/index.html"
chmod -R a+rX "$work/www"

# --- servers ------------------------------------------------------------------------------
lighttpd_conf() { # ADDRESS
    cat > "$work/lighttpd.conf" <<EOF
server.document-root = "$work/www"
server.bind = "$1"
server.port = 80
server.event-handler = "linux-sysepoll"
server.network-backend = "sendfile"
server.pid-file = "$work/lighttpd.pid"
server.errorlog = "$work/lighttpd.log"
server.max-connections = 4096
server.max-fds = 16384
server.listen-backlog = 4096
index-file.names = ( "index.html" )
mimetype.assign = ( ".html" => "text/html" )
EOF
}
apache_conf() { # ADDRESS
    local m=/usr/lib/apache2/modules
    cat > "$work/apache2.conf" <<EOF
ServerRoot "$work"
ServerName bench.invalid
LoadModule mpm_prefork_module $m/mod_mpm_prefork.so
LoadModule authz_core_module $m/mod_authz_core.so
LoadModule dir_module $m/mod_dir.so
Listen $1:80
PidFile "$work/apache2.pid"
ErrorLog "$work/apache2.log"
Mutex file:$work default
User www-data
Group www-data
DocumentRoot "$work/www"
<Directory "$work/www">
    Require all granted
</Directory>
KeepAlive Off
ListenBacklog 4096
StartServers 32
MinSpareServers 32
MaxSpareServers 64
ServerLimit 150
MaxRequestWorkers 150
EOF
}
# start_server SERVER STACK ADDRESS: sets server_pid (leader of its own process group).
start_server() {
    local cmd
    case "$1" in
        lighttpd) lighttpd_conf "$3"; cmd=(lighttpd -D -f "$work/lighttpd.conf") ;;
        apache-prefork) apache_conf "$3"; cmd=(apache2 -f "$work/apache2.conf" -DFOREGROUND) ;;
    esac
    if [ "$2" = linux ]; then
        ip netns exec "$server_ns" setsid "${cmd[@]}" >>"$work/server.out" 2>&1 &
    else
        setsid "$NETPOP" run --name "$np_name" --socket-dir "$work" --shim "$SHIM" --required -- \
            "${cmd[@]}" >>"$work/server.out" 2>&1 &
    fi
    server_pid=$!
}
wait_up() { # URL
    for _ in $(seq 150); do
        ip netns exec "$client_ns" "$LOADGEN" -n 1 --json "$1" 2>/dev/null | grep -q '"failed":0' && return 0
        sleep 0.1
    done
    say "bench-e2e: $1 does not answer"; cat "$work/server.out" >&2; return 1
}

# start_netpop NIC QUEUES: sets np_pid and netpop_ip.
start_netpop() {
    local args
    case "$1" in
        sim) args=(--nic sim --wire "tap:${tag}x"); netpop_ip=10.84.0.2 ;;
        afxdp)
            # As many queues as instances: netpop serves queues 0..Q-1 only, and veth
            # spreads frames over all of its receive queues.
            ip link add "${tag}x" numtxqueues "$2" numrxqueues "$2" type veth peer name "${tag}y" \
                numtxqueues "$2" numrxqueues "$2" netns "$client_ns"
            ip link set "${tag}x" up
            ip -n "$client_ns" addr add 10.85.0.1/24 dev "${tag}y"
            ip -n "$client_ns" link set "${tag}y" up
            ip netns exec "$client_ns" ethtool -K "${tag}y" tx off tso off gso off >/dev/null
            args=(--nic "afxdp:${tag}x"); netpop_ip=10.85.0.2 ;;
    esac
    np_name="bench$$$1$2"
    setsid "$NETPOP" up --name "$np_name" --socket-dir "$work" --foreground "${args[@]}" \
        --queues "$2" --ip "$netpop_ip/24" --policy off --app-sockets "$APP_SOCKETS" >"$work/netpop.out" 2>&1 &
    np_pid=$!
    for _ in $(seq 600); do
        grep -q " up: " "$work/netpop.out" && break
        kill -0 "$np_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q " up: " "$work/netpop.out"; then
        say "bench-e2e: netpop --nic $1 --queues $2 did not start:"
        cat "$work/netpop.out" >&2
        return 1
    fi
    if [ "$1" = sim ]; then
        ip link set "${tag}x" netns "$client_ns"
        ip -n "$client_ns" addr add 10.84.0.1/24 dev "${tag}x"
        ip -n "$client_ns" link set "${tag}x" up
    fi
    # Apache's children run as www-data and register themselves.
    chgrp www-data "$work/$np_name.sock"
    chmod 0660 "$work/$np_name.sock"
}

# CPU ticks (utime+stime, and cutime+cstime of reaped children) of process group $1.
group_ticks() {
    local pg=$1 total=0 f
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        # Fields after "pid (comm) ": state ppid pgrp ... utime(12) stime(13) cutime(14) cstime(15)
        set -- ${line##*) }
        [ "${3:-}" = "$pg" ] || continue
        total=$((total + ${12} + ${13} + ${14} + ${15}))
    done
    echo "$total"
}

# --- runs ---------------------------------------------------------------------------------
field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }
latency_ms() { sed -n "s/.*\"latency_us\":{[^}]*\"$1\":\([0-9.e+-]*\).*/\1/p" | awk '{printf "%.2f", $1 / 1000}'; }
points=()
table=()
row() { printf '%-15s %-13s %5s %6s %10s %8s %8s %8s %12s\n' "$@"; }
header=$(row server stack inst conc 'req/s' failed 'p50 ms' 'p99 ms' 'CPU s/100k')
say "$header"

measure() { # SERVER STACK INSTANCES CONCURRENCY URL PGIDS...
    local server=$1 stack=$2 inst=$3 conc=$4 url=$5
    shift 5
    ip netns exec "$client_ns" "$LOADGEN" --json -t "$WARMUP" -c "$conc" "$url" >/dev/null 2>&1 || true
    local before=0 after=0 pg
    for pg in "$@"; do before=$((before + $(group_ticks "$pg"))); done
    local TIMEFORMAT='%U %S'
    { time ip netns exec "$client_ns" "$LOADGEN" --json -t "$DURATION" -c "$conc" "$url" >"$work/run.json"; } 2>"$work/run.time"
    for pg in "$@"; do after=$((after + $(group_ticks "$pg"))); done
    local rps failed completed p50 p99 cpu label
    rps=$(field requests_per_s <"$work/run.json")
    failed=$(field failed <"$work/run.json")
    completed=$(field completed <"$work/run.json")
    p50=$(latency_ms p50 <"$work/run.json")
    p99=$(latency_ms p99 <"$work/run.json")
    cpu=$(awk -v t="$after" -v f="$before" -v hz="$HZ" -v n="$completed" -v e="$failed" \
        '{ c = (t - f) / hz + $1 + $2; conns = n + e; printf "%.2f", (conns > 0 ? c * 100000 / conns : 0) }' "$work/run.time")
    label="$stack"
    [ "$stack" != linux ] && label="netpop $stack"
    table+=("$(row "$server" "$label" "${inst:--}" "$conc" "$(printf '%.0f' "$rps")" "$failed" "$p50" "$p99" "$cpu")")
    say "${table[-1]}"
    local inst_json=""
    [ -n "$inst" ] && inst_json=",\"instances\":$inst"
    points+=("{\"server\":\"$server\",\"stack\":\"$label\"$inst_json,\"concurrency\":$conc,\"requests_per_s\":$rps,\"failed\":$failed,\"completed\":$completed,\"p50_ms\":$p50,\"p99_ms\":$p99,\"cpu_s_per_100k\":$cpu}")
}

pgid_of() { awk '{sub(/.*\) /, ""); print $3}' "/proc/$1/stat"; }

started=$(date -u '+%Y-%m-%d %H:%M UTC')
for stack in $STACKS; do
    instance_list="$INSTANCES"
    [ "$stack" = linux ] && instance_list="-"
    for inst in $instance_list; do
        address=$linux_ip
        if [ "$stack" != linux ]; then
            start_netpop "$stack" "$inst" || { stop_netpop; continue; }
            address=$netpop_ip
        fi
        for server in $SERVERS; do
            start_server "$server" "$stack" "$address"
            wait_up "http://$address/index.html" || { stop_server; continue; }
            pgids=("$(pgid_of "$server_pid")")
            [ "$stack" != linux ] && pgids+=("$(pgid_of "$np_pid")")
            for conc in $CONCURRENCY; do
                measure "$server" "$stack" "${inst/-/}" "$conc" "http://$address/index.html" "${pgids[@]}"
            done
            stop_server
        done
        [ "$stack" != linux ] && stop_netpop
    done
done

setup="lighttpd $(lighttpd -v | head -1 | awk '{print $1}' | cut -d/ -f2), $(apache2 -v | head -1 | awk '{print $3}'), $(nproc) CPUs, $(uname -r), ${DURATION} s per run, $started, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$json" = 1 ]; then
    printf '{"benchmark":"e2e","title":"End to end: 4-byte file, one request per connection","x_label":"concurrency","setup":"%s","points":[' "$setup"
    (IFS=,; printf '%s' "${points[*]}")
    printf ']}\n'
else
    echo "$setup"
    echo "$header"
    printf '%s\n' "${table[@]}"
fi
