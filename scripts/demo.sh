#!/usr/bin/env bash
# The netpop demo: Debian's lighttpd, unmodified, served by netpop and by the Linux stack,
# loaded the same way, side by side.
#
#   netpop: `netpop up --nic sim --wire tap:... --queues 2` (the 82599 model, its wire a
#           TAP device whose kernel side is in a client namespace) and
#           `netpop run -- lighttpd -D -f ...`;
#   Linux:  the same lighttpd binary and configuration in a server namespace, reached over
#           a veth pair from the same client namespace.
#
# From the client namespace the project's load generator (benches: loadgen) makes one
# request per connection, 100 at a time, for SECONDS (default 10) per side, against a
# 4-byte file; the table shows requests/s, failed requests and the p50/p99 latency.
# Everything (namespaces, links, netpop, servers) is removed on exit.
#
# Needs root (network namespaces, a TAP device) and lighttpd. Without them it says so and
# runs the unprivileged demo instead: two tcp-core stacks over an in-memory wire.
#
#   scripts/demo.sh                    10 s per side
#   SECONDS_PER_SIDE=30 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

unprivileged() {
    echo "netpop demo: $1"
    echo "netpop demo: running the unprivileged demo instead (two tcp-core stacks, in-memory wire)"
    exec cargo run --quiet --release -p tcp-core --example in_memory_pair
}
[ "$(id -u)" = 0 ] || unprivileged "serving lighttpd on netpop needs root (network namespaces, a TAP device)"
for tool in lighttpd ip; do
    command -v "$tool" >/dev/null || unprivileged "$tool is not installed (apt-get install lighttpd iproute2)"
done

SECONDS_PER_SIDE="${SECONDS_PER_SIDE:-10}"
CONCURRENCY="${CONCURRENCY:-100}"

echo "building netpop, the shim and loadgen (release)..."
cargo build --release --quiet -p flowgroups --bin netpop -p shim-posix --lib -p netpop-benches --bin loadgen
NETPOP="$PWD/target/release/netpop"
LOADGEN="$PWD/target/release/loadgen"

# --- topology: addresses only inside namespaces made here, names unique to this run -------
tag="npd$$"
client_ns="${tag}c"
server_ns="${tag}s"
tap="${tag}t"
work="$(mktemp -d)"
chmod 755 "$work"
name="demo$$"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    "$NETPOP" down --name "$name" --socket-dir "$work" --grace 2 >/dev/null 2>&1 || true
    ip netns delete "$client_ns" 2>/dev/null || true
    ip netns delete "$server_ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

netpop_ip=10.81.0.2
client_tap_ip=10.81.0.1
linux_ip=10.82.0.2
client_veth_ip=10.82.0.1
ip netns add "$client_ns"
ip netns add "$server_ns"
for ns in "$client_ns" "$server_ns"; do ip -n "$ns" link set lo up; done

# netpop: the model's wire is a TAP device; its kernel side goes to the client namespace.
"$NETPOP" up --name "$name" --socket-dir "$work" --nic sim --wire "tap:$tap" --queues 2 \
    --ip "$netpop_ip/24" >/dev/null
ip link set "$tap" netns "$client_ns"
ip -n "$client_ns" addr add "$client_tap_ip/24" dev "$tap"
ip -n "$client_ns" link set "$tap" up

# Linux: a veth pair between the server and client namespaces.
ip link add "${tag}a" type veth peer name "${tag}b"
ip link set "${tag}a" netns "$client_ns"
ip link set "${tag}b" netns "$server_ns"
ip -n "$client_ns" addr add "$client_veth_ip/24" dev "${tag}a"
ip -n "$server_ns" addr add "$linux_ip/24" dev "${tag}b"
ip -n "$client_ns" link set "${tag}a" up
ip -n "$server_ns" link set "${tag}b" up

mkdir -p "$work/www"
printf 'abc\n' > "$work/www/index.html"
chmod -R a+rX "$work/www"
conf() { # conf NAME BIND_ADDRESS
    cat > "$work/$1.conf" <<EOF
server.document-root = "$work/www"
server.bind = "$2"
server.port = 80
server.event-handler = "linux-sysepoll"
server.network-backend = "sendfile"
server.pid-file = "$work/$1.pid"
server.errorlog = "$work/$1.log"
server.max-connections = 4096
server.max-fds = 8192
index-file.names = ( "index.html" )
mimetype.assign = ( ".html" => "text/html" )
EOF
}
conf netpop "$netpop_ip"
conf linux "$linux_ip"
"$NETPOP" run --name "$name" --socket-dir "$work" --required -- lighttpd -D -f "$work/netpop.conf" &
pids+=($!)
ip netns exec "$server_ns" lighttpd -D -f "$work/linux.conf" &
pids+=($!)

wait_up() { # wait_up URL
    for _ in $(seq 100); do
        ip netns exec "$client_ns" "$LOADGEN" -n 1 --json "$1" 2>/dev/null | grep -q '"failed":0' && return 0
        sleep 0.1
    done
    echo "netpop demo: $1 does not answer" >&2
    exit 1
}

# --- runs -----------------------------------------------------------------------------------
field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }
latency() { sed -n "s/.*\"latency_us\":{[^}]*\"$1\":\([0-9.e+-]*\).*/\1/p" | awk '{printf "%.2f", $1 / 1000}'; }
rows=()
run_side() { # run_side LABEL URL
    wait_up "$2"
    echo "loading $1: $2 (${SECONDS_PER_SIDE} s, $CONCURRENCY connections at a time, one request each)..."
    ip netns exec "$client_ns" "$LOADGEN" --json -t "$SECONDS_PER_SIDE" -c "$CONCURRENCY" "$2" > "$work/$1.json"
    rows+=("$(printf '%-22s %12.0f %8s %10s %10s' "$1" "$(field requests_per_s < "$work/$1.json")" \
        "$(field failed < "$work/$1.json")" "$(latency p50 < "$work/$1.json")" "$(latency p99 < "$work/$1.json")")")
}
run_side "lighttpd on netpop" "http://$netpop_ip/index.html"
run_side "lighttpd on Linux" "http://$linux_ip/index.html"

echo
echo "lighttpd $(lighttpd -v | head -1 | awk '{print $1}' | cut -d/ -f2), $(nproc) CPUs, $(uname -r);" \
    "netpop: 2 instances on the 82599 model, TAP wire; Linux: veth"
printf '%-22s %12s %8s %10s %10s\n' server 'requests/s' failed 'p50 ms' 'p99 ms'
printf '%s\n' "${rows[@]}"
echo
"$NETPOP" stat --name "$name" --socket-dir "$work"
