#!/usr/bin/env bash
# Profiles ringsfu during one load-test scenario and draws flamegraphs/<scenario>.svg.
#   scripts/flamegraph.sh <scenario> [loadtest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="$1"; shift
work="${TMPDIR:-/tmp}/ringsfu-flamegraph-$scenario"
mkdir -p "$work" flamegraphs
./target/release/ringsfu-loadtest run "$scenario" --duration "${FLAME_SECONDS:-25}" --profile "$work/perf.data" --out "$work" --quiet "$@"
perf script -i "$work/perf.data" 2>/dev/null \
    | inferno-collapse-perf \
    | inferno-flamegraph --title "ringsfu: $scenario ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))" \
    > "flamegraphs/$scenario.svg"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "$work/collapsed.txt"
echo "flamegraphs/$scenario.svg written; top frames:"
# Self time by function: the last frame of each stack.
awk '{n=$NF; $NF=""; k=split($0,f,";"); sub(/ $/,"",f[k]); self[f[k]]+=n; total+=n} END {for (s in self) printf "%6.2f%%  %s\n", 100*self[s]/total, s}' "$work/collapsed.txt" | sort -rn | head -15
