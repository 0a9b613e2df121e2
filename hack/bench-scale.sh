#!/usr/bin/env bash
# Scale envelope: N speakers' membership (the real speaker/membership and
# memberlist, encrypted) and election (speaker/election) in one process on
# memberlist's in-memory network; see README "Scale". No root, no network
# namespace and no packet on any interface: the members talk over Go
# channels.
#
# Prints one line per cluster size, address count and timer set:
#   scale nodes=<N> vips=<V> detect_p50=<ms> detect_p99=<ms> false_dead=<n>
#         gossip_bps=<bytes/s per member> elect_ms=<ms> moved_pct=<%> timers=...
#
# Environment (defaults in brackets; the defaults take about 75 minutes, most of it the 250-member steady state, which runs 10 times slower than the cluster time it measures):
#   SCALE_NODES [3,50,100,250]    cluster sizes
#   SCALE_VIPS [1000,10000]       address counts
#   SCALE_KILLS [10]              owner kills per size and timer set
#   SCALE_STEADY [5m]             steady state at the largest size
#   SCALE_STEADY_SMALL [30s]      steady state at the other sizes
#   SCALE_LAN_STEADY [30s]        steady state with memberlist's LAN timers
#   SCALE_TIMERS [ironlb,lan]     timer sets to run
#   SCALE_DILATE [auto]           stretch every timer by this factor and report
#                                 in the cluster's time (auto: none up to 50
#                                 members at the speaker's timers; see
#                                 hack/bench-scale/dilate.go)
#   SCALE_LOG                     also write the progress log to this file
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/bench-scale" ./hack/bench-scale

args=(
	-nodes "${SCALE_NODES:-3,50,100,250}"
	-vips "${SCALE_VIPS:-1000,10000}"
	-kills "${SCALE_KILLS:-10}"
	-steady "${SCALE_STEADY:-5m}"
	-steady-small "${SCALE_STEADY_SMALL:-30s}"
	-lan-steady "${SCALE_LAN_STEADY:-30s}"
	-timers "${SCALE_TIMERS:-ironlb,lan}"
	-dilate "${SCALE_DILATE:-auto}"
	-v
)
echo "bench-scale: ${args[*]} (host: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
if [[ -n "${SCALE_LOG:-}" ]]; then
	"$bin/bench-scale" "${args[@]}" 2> >(tee -a "$SCALE_LOG" >&2)
else
	"$bin/bench-scale" "${args[@]}"
fi
