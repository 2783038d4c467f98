#!/usr/bin/env bash
# The whole netpop test suite; CI runs exactly this. On a fresh machine it first installs
# what the tests need (Debian packages when run as root, cargo-fuzz).
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=60 scripts/test.sh   longer fuzz smoke runs (default 20 s per target)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- dependencies -------------------------------------------------------------------
APT_PACKAGES=(iproute2 iputils-ping curl ethtool lighttpd apache2 apache2-utils)
if [ "$(id -u)" = 0 ]; then
    missing=()
    for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        step "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
else
    echo "note: not root; tests that need network namespaces will skip and say so"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

# --- static checks ------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

# --- tests ----------------------------------------------------------------------------
step "cargo test (workspace)"
cargo test --workspace --no-fail-fast

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

# --- Miri over the shared-memory layer -------------------------------------------------
# Miri needs a nightly toolchain. Where one cannot be installed (no access to the toolchain
# server) the step says so and moves on; the multi-process and hostile-peer tests still run.
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    timeout 300 rustup toolchain install nightly --profile minimal --component miri \
        >/dev/null 2>&1 || true
fi
if cargo +nightly miri --version >/dev/null 2>&1; then
    step "miri: flowgroups shared-memory rings"
    MIRIFLAGS="-Zmiri-disable-isolation" cargo +nightly miri test -q -p flowgroups --lib shm::
else
    echo "SKIPPED miri: no nightly toolchain with Miri could be installed on this machine"
fi

# --- fuzz smoke runs --------------------------------------------------------------------
if [ -d fuzz/fuzz_targets ] && ls fuzz/fuzz_targets/*.rs >/dev/null 2>&1; then
    secs="${FUZZ_SECONDS:-20}"
    step "fuzz: build all targets"
    (cd fuzz && cargo fuzz build --sanitizer none --release)
    for t in fuzz/fuzz_targets/*.rs; do
        name=$(basename "$t" .rs)
        step "fuzz: $name for ${secs}s"
        (cd fuzz && cargo fuzz run --sanitizer none --release "$name" -- \
            -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 2>&1 | tail -n 4)
    done
fi

step "all checks passed"
