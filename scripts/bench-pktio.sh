#!/usr/bin/env bash
# Packet I/O benchmark of ixgbe-user (see BENCHMARKS.md, "Packet I/O"): builds the `pktio`
# binary in release mode and runs it. Run as root for the veth parts (AF_PACKET and AF_XDP);
# without root only the 82599 model link is measured and the rest is reported as skipped.
#
#   scripts/bench-pktio.sh                      table on stdout
#   scripts/bench-pktio.sh --json               one JSON object, for scripts
#   scripts/bench-pktio.sh --duration 5 --warmup 1 --only model|veth --no-pin
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p netpop-benches --bin pktio
exec target/release/pktio "$@"
