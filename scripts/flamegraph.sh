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
echo "flamegraphs/$scenario.svg written; share of ringsfu's samples under each frame (inclusive):"
# A stack counts once for every pattern one of its frames matches. (Inlined functions appear by
# their short names, hence patterns without the `impl` path.)
awk '
BEGIN {
    n = split("__sys_sendmmsg|kernel UDP send (sendmmsg)#" \
              "do_recvmmsg|kernel UDP receive (recvmmsg)#" \
              "do_handle_receive|str0m intake of received datagrams (SRTP decrypt, RTCP)#" \
              "StreamTx::write_rtp|str0m write_rtp (queueing forwarded packets)#" \
              "str0m::Rtc::poll_output|str0m poll_output (pacer, packetize, SRTP)#" \
              "str0m::Rtc::do_handle_timeout|str0m handle_timeout (ICE, BWE, pacer, RTCP)#" \
              "EVP_AEAD_CTX_seal|AES-GCM seal (by str0m or by ringsfu)#" \
              "Shard>::forward|ringsfu fan-out: decision, rewrite, own egress#" \
              "DirectStream::write_rtp|ringsfu own egress (header + AES-GCM seal)#" \
              "bandwidth::<impl|ringsfu allocation and layer selection#" \
              "receive_rtcp|ringsfu reading subscribers RTCP (NACK, PLI, feedback)#" \
              "receive_media|ringsfu own ingress (open, receive state, fan-out)#" \
              "EVP_AEAD_CTX_open|AES-GCM open (publishers packets)#" \
              "ingress_timeout|ringsfu feedback, NACKs, reports to publishers#" \
              "congestion::SendSideEstimator|ringsfu bandwidth estimator#" \
              "Ring::wait|shard sleep (io_uring_enter)", rows, "#")
    for (i = 1; i <= n; i++) { split(rows[i], kv, "|"); pat[i] = kv[1]; label[i] = kv[2] }
}
{
    count = $NF; total += count
    for (i = 1; i <= n; i++) if (index($0, pat[i]) > 0) hit[i] += count
}
END { for (i = 1; i <= n; i++) printf "%6.1f%%  %s\n", 100 * hit[i] / total, label[i] }
' "$work/collapsed.txt"
