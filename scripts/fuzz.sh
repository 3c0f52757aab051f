#!/usr/bin/env bash
# Runs every fuzz target (fuzz/src/targets.rs) for SECONDS each with the
# stable-toolchain mutation driver, saving new corpus entries
# (fuzz/corpus/<target>/) and panicking inputs (fuzz/crashes/<target>/).
# Prints one "FUZZ| target | N execs | ..." line per target; exits non-zero
# on any crash or aborted run (an oversized allocation aborts).
#   scripts/fuzz.sh [SECONDS] [TARGET|all]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
target="${2:-all}"
cargo run --quiet --release -- "$target" "$secs" --save
