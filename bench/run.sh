#!/usr/bin/env bash
# Benchmark suite: builds the release binary and the runner once, then runs
# every scenario against the release `tether`, its own Mosquitto and a local
# HTTP server. Writes bench/results/<date>.json, bench/results/latest.json
# and regenerates the table in BENCHMARKS.md.
#
#   bench/run.sh                      # the full suite (about 25 minutes)
#   BENCH_QUICK=1 bench/run.sh        # scaled down (about 5 minutes)
#   BENCH_SMOKE=1 bench/run.sh        # CI: tiny counts, checks nothing is lost or
#                                     # unanswered, judges no timing, writes no results
#   BENCH_ONLY=relay,bridge bench/run.sh
#
# Parameters (environment; the defaults are the issue's):
#   BENCH_DURATION=30      sustained load per round, seconds (scenario 1)
#   BENCH_REPEAT=3         rounds of scenario 1 (median quoted), READY starts
#   BENCH_IDLE=600         idle RSS period, seconds
#   BENCH_BACKLOG=1000000  messages queued while the broker is down (2, 4)
#   BENCH_CALLS=10000      sequential relayed and direct GETs each (3)
#   BENCH_BRIDGE_TX=2000   afLib4 UPDATE transactions (5)
#   BENCH_ONLY=durable,backlog,relay,bridge
#   BENCH_STORE='cache_bytes = 1048576'    extra [store] lines for tether
#   BENCH_TETHER_ENV='MALLOC_ARENA_MAX=2'  extra environment for tether
#   BENCH_CROSS=1          also build aarch64-musl and armv7 for the sizes
#   TETHER_BIN=path        measure this binary instead of building one
#   BENCH_PROFILE=bench    cargo profile of the runner (the smoke run uses dev)
#   BENCH_NO_REPORT=1      an experiment: only bench/results/<date>.json, leaving
#                          latest.json and BENCHMARKS.md alone
#   BENCH_REPORT_FROM=bench/results/latest.json  only regenerate BENCHMARKS.md
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -n "${BENCH_SMOKE:-}" ]; then
  : "${BENCH_DURATION:=3}" "${BENCH_REPEAT:=1}" "${BENCH_IDLE:=1}"
  : "${BENCH_BACKLOG:=5000}" "${BENCH_CALLS:=200}" "${BENCH_BRIDGE_TX:=100}"
  # The runner's own speed does not matter here: reuse the test build's artifacts.
  : "${BENCH_PROFILE:=dev}"
  export BENCH_DURATION BENCH_REPEAT BENCH_IDLE BENCH_BACKLOG BENCH_CALLS BENCH_BRIDGE_TX
fi
if [ -n "${BENCH_QUICK:-}" ]; then
  : "${BENCH_DURATION:=10}" "${BENCH_REPEAT:=1}" "${BENCH_IDLE:=30}"
  : "${BENCH_BACKLOG:=100000}" "${BENCH_CALLS:=2000}" "${BENCH_BRIDGE_TX:=500}"
  export BENCH_DURATION BENCH_REPEAT BENCH_IDLE BENCH_BACKLOG BENCH_CALLS BENCH_BRIDGE_TX
fi
command -v mosquitto >/dev/null || { echo "bench: mosquitto not on PATH (apt-get install mosquitto)" >&2; exit 1; }

# Measured as built for devices: the crate `tether` has no features.
build="cargo build --release --locked -p tether --bin tether"
if [ -z "${TETHER_BIN:-}" ]; then
  # shellcheck disable=SC2086
  $build
  if [ -n "${BENCH_CROSS:-}" ]; then
    cargo build --release --locked -p tether --bin tether \
      --target aarch64-unknown-linux-musl --target armv7-unknown-linux-gnueabihf
  fi
  # A copy, so a rebuild by someone else during the run changes nothing.
  out=${CARGO_TARGET_DIR:-target}
  mkdir -p "$out/bench"
  cp "$out/release/tether" "$out/bench/tether"
  export TETHER_BIN="$out/bench/tether"
  export BENCH_BUILD_COMMAND="$build"
fi

vars=$(env | grep -E '^BENCH_(DURATION|REPEAT|IDLE|BACKLOG|CALLS|BRIDGE_TX|ONLY|STORE|TETHER_ENV|QUICK)=' | sort | tr '\n' ' ' || true)
export BENCH_COMMAND="${vars}bench/run.sh"
# The runner is a harness = false bench target (bench/main.rs), built in the
# bench profile (= release) so that its baselines are not handicapped.
cargo bench --locked -p tether --bench suite --profile "${BENCH_PROFILE:-bench}"
