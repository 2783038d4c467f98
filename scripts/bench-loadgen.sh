#!/usr/bin/env bash
# loadgen against ApacheBench on the same lighttpd (see BENCHMARKS.md, "Load generator"):
# builds `loadgen` in release mode, starts lighttpd serving a 4-byte file in a network
# namespace of its own, and from a second namespace across a veth pair runs `ab` and
# `loadgen` alternately, ROUNDS times each, with the same request count and concurrency.
# Prints each run's requests/s, latency and client CPU time, then loadgen/ab: the ratio of
# the mean requests/s and the median of the per-round ratios (robust to one noisy run).
# Needs root, lighttpd and ab (Debian: lighttpd, apache2-utils).
#
#   scripts/bench-loadgen.sh                          -n 20000 -c 50, 3 rounds
#   REQUESTS=50000 CONCURRENCY=200 ROUNDS=5 scripts/bench-loadgen.sh
#   KEEPALIVE=1 scripts/bench-loadgen.sh             both with keep-alive (ab -k, loadgen -k)
#   CLIENT_CPU=1 SERVER_CPU=1 scripts/bench-loadgen.sh   pin the client / lighttpd (taskset)
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS="${REQUESTS:-20000}"
CONCURRENCY="${CONCURRENCY:-50}"
ROUNDS="${ROUNDS:-3}"
KEEPALIVE="${KEEPALIVE:-0}"
client_pin=()
server_pin=()
[ -n "${CLIENT_CPU:-}" ] && client_pin=(taskset -c "$CLIENT_CPU")
[ -n "${SERVER_CPU:-}" ] && server_pin=(taskset -c "$SERVER_CPU")

if [ "$(id -u)" != 0 ]; then
    echo "bench-loadgen: needs root (network namespaces)" >&2
    exit 1
fi
export PATH="$PATH:/usr/sbin:/sbin"
for tool in lighttpd ab ip; do
    command -v "$tool" >/dev/null || { echo "bench-loadgen: $tool not found (apt-get install lighttpd apache2-utils iproute2)" >&2; exit 1; }
done

cargo build --release --quiet -p netpop-benches --bin loadgen
LOADGEN="$PWD/target/release/loadgen"

# --- topology: server namespace <-veth-> client namespace, addresses only inside them ----
tag="lgb$$"
server_ns="${tag}s"
client_ns="${tag}c"
work="$(mktemp -d)"
lighttpd_pid=""
cleanup() {
    if [ -n "$lighttpd_pid" ]; then kill "$lighttpd_pid" 2>/dev/null || true; wait "$lighttpd_pid" 2>/dev/null || true; fi
    ip netns delete "$client_ns" 2>/dev/null || true
    ip netns delete "$server_ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

server_ip=10.79.0.2
client_ip=10.79.0.1
ip netns add "$server_ns"
ip netns add "$client_ns"
ip link add "${tag}a" type veth peer name "${tag}b"
ip link set "${tag}a" netns "$client_ns"
ip link set "${tag}b" netns "$server_ns"
ip -n "$client_ns" addr add "$client_ip/24" dev "${tag}a"
ip -n "$server_ns" addr add "$server_ip/24" dev "${tag}b"
for ns in "$client_ns" "$server_ns"; do ip -n "$ns" link set lo up; done
ip -n "$client_ns" link set "${tag}a" up
ip -n "$server_ns" link set "${tag}b" up

mkdir -p "$work/www"
printf 'abc\n' > "$work/www/index.html"
cat > "$work/lighttpd.conf" <<EOF
server.document-root = "$work/www"
server.bind = "$server_ip"
server.port = 80
server.pid-file = "$work/lighttpd.pid"
server.errorlog = "$work/error.log"
server.max-connections = 4096
server.max-fds = 8192
index-file.names = ( "index.html" )
mimetype.assign = ( ".html" => "text/html" )
EOF
ip netns exec "$server_ns" "${server_pin[@]}" lighttpd -D -f "$work/lighttpd.conf" &
lighttpd_pid=$!
url="http://$server_ip:80/index.html"
for _ in $(seq 100); do
    ip netns exec "$client_ns" "$LOADGEN" -n 1 --json "$url" 2>/dev/null | grep -q '"failed":0' && break
    sleep 0.1
done

# --- runs ---------------------------------------------------------------------------------
ka_flag=()
[ "$KEEPALIVE" = 1 ] && ka_flag=(-k)
TIMEFORMAT='%U %S'
json_field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }
nested_field() { sed -n "s/.*\"$1\":{[^}]*\"$2\":\([0-9.e+-]*\).*/\1/p"; }

echo "lighttpd $(lighttpd -v | head -1 | cut -d' ' -f1 | cut -d/ -f2), ab $(ab -V | head -1 | awk '{print $5}'), $(nproc) CPUs, $(uname -r)"
echo "each run: -n $REQUESTS -c $CONCURRENCY ${ka_flag[*]:-(one request per connection)} $url" \
    "(client CPU ${CLIENT_CPU:-any}, lighttpd CPU ${SERVER_CPU:-any})"
printf '%-8s %-5s %10s %8s %9s %9s %12s\n' client round 'req/s' failed 'p50 ms' 'p99 ms' 'CPU s/10k'
ab_sum=0
lg_sum=0
ratios=()
for round in $(seq "$ROUNDS"); do
    { time ip netns exec "$client_ns" "${client_pin[@]}" ab -q "${ka_flag[@]}" -n "$REQUESTS" -c "$CONCURRENCY" "$url" > "$work/ab.out"; } 2> "$work/ab.time"
    ab_rps=$(awk '/^Requests per second:/ {print $4}' "$work/ab.out")
    ab_failed=$(awk '/^Failed requests:/ {print $3}' "$work/ab.out")
    ab_non2xx=$(awk '/^Non-2xx responses:/ {print $3}' "$work/ab.out")
    ab_p50=$(awk '$1 == "50%" {print $2}' "$work/ab.out")
    ab_p99=$(awk '$1 == "99%" {print $2}' "$work/ab.out")
    ab_cpu=$(awk -v n="$REQUESTS" '{printf "%.3f", ($1 + $2) * 10000 / n}' "$work/ab.time")
    printf '%-8s %-5s %10.0f %8s %9s %9s %12s\n' ab "$round" "$ab_rps" "$((ab_failed + ${ab_non2xx:-0}))" "$ab_p50" "$ab_p99" "$ab_cpu"

    { time ip netns exec "$client_ns" "${client_pin[@]}" "$LOADGEN" --json "${ka_flag[@]}" -n "$REQUESTS" -c "$CONCURRENCY" "$url" > "$work/lg.json"; } 2> "$work/lg.time"
    lg_rps=$(json_field requests_per_s < "$work/lg.json")
    lg_failed=$(json_field failed < "$work/lg.json")
    lg_p50=$(nested_field latency_us p50 < "$work/lg.json" | awk '{printf "%.3f", $1 / 1000}')
    lg_p99=$(nested_field latency_us p99 < "$work/lg.json" | awk '{printf "%.3f", $1 / 1000}')
    lg_cpu=$(awk -v n="$REQUESTS" '{printf "%.3f", ($1 + $2) * 10000 / n}' "$work/lg.time")
    printf '%-8s %-5s %10.0f %8s %9s %9s %12s\n' loadgen "$round" "$lg_rps" "$lg_failed" "$lg_p50" "$lg_p99" "$lg_cpu"

    ab_sum=$(awk -v a="$ab_sum" -v b="$ab_rps" 'BEGIN {print a + b}')
    lg_sum=$(awk -v a="$lg_sum" -v b="$lg_rps" 'BEGIN {print a + b}')
    ratios+=("$(awk -v a="$ab_rps" -v l="$lg_rps" 'BEGIN {printf "%.3f", l / a}')")
done
awk -v a="$ab_sum" -v l="$lg_sum" -v r="$ROUNDS" 'BEGIN {
    printf "mean req/s: ab %.0f, loadgen %.0f; ratio of means loadgen / ab = %.3f\n", a / r, l / r, l / a }'
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ v[NR] = $1; list = list " " $1 } END {
    median = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "per-round loadgen / ab (sorted):%s; median %.3f\n", list, median }'
if [ -s "$work/error.log" ] && grep -qv 'server started\|server stopped' "$work/error.log"; then
    echo "lighttpd error log:"; cat "$work/error.log"
fi
