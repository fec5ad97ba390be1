#!/usr/bin/env bash
# A flamegraph of the exchange bench's saturated one-way runs (issue 9: "where a
# target is missed, profile"): perf samples this process (the broker and both
# adapters; RabbitMQ is another process) at 499 Hz with DWARF call graphs, and
# inferno draws them. Start-up (the register's schemas compiled) is left out.
#
#   bash tests/benches/profile.sh [out.svg]     # default: tests/benches/profiles/oneway.svg
#
# Needs perf (Debian: linux-perf) and inferno (`cargo install inferno`); RabbitMQ
# on AMQP_URL as for the bench. Settings pass through (MEV_BENCH_N, ...);
# FOLDED=path also keeps the collapsed stacks (for inferno-diff-folded).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="$(realpath -m "${1:-tests/benches/profiles/oneway.svg}")"
command -v perf >/dev/null || { echo "perf is required (apt-get install linux-perf)"; exit 1; }
command -v inferno-flamegraph >/dev/null || cargo install inferno
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mev-target}"
bin="$(cargo bench -p mev-tests --bench exchange --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
[ -x "$bin" ] || { echo "cannot build the exchange bench"; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Benches run from their package's directory (the register is found from there).
(cd tests && MEV_BENCH_PARTS=oneway MEV_BENCH_RUNS="${MEV_BENCH_RUNS:-1}" \
  perf record -F 499 --call-graph dwarf,16384 -o "$work/perf.data" "$bin" --bench)
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf \
  | grep -v -e 'Fixture::new' -e 'load_register' > "$work/folded"
mkdir -p "$(dirname "$out")"
[ -z "${FOLDED:-}" ] || cp "$work/folded" "$FOLDED"
inferno-flamegraph --minwidth 0.2 \
  --title "mev exchange bench: one way, saturated ($(git rev-parse --short HEAD))" \
  < "$work/folded" > "$out"
echo "wrote $out ($(wc -l < "$work/folded") distinct stacks)"
