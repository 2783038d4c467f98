#!/usr/bin/env bash
# The netpop demo. Its goal is an unmodified lighttpd served by netpop; that needs the shim,
# which is not built yet. Until then it runs what exists: two tcp-core stacks talking TCP
# over an in-memory wire, printing what crossed it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f tcp-core/examples/in_memory_pair.rs ]; then
    exec cargo run --quiet --release -p tcp-core --example in_memory_pair
fi
echo "netpop demo: not built yet (the shim and kernel instances are still to come; see README.md)"
