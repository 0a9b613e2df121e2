#!/usr/bin/env bash
# Controller benchmark on a fresh control plane: cold-start convergence of
# N LoadBalancer Services against a plain client making the same writes,
# then a restart that must change no address and write nothing.
# Usage: hack/bench-controller.sh [N]   (default 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
dir=$(mktemp -d /tmp/ironlb-bench-XXXXXX)
cleanup() { bash hack/control-plane.sh down "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
bash hack/control-plane.sh up "$dir"
go run ./hack/bench-controller --kubeconfig "$dir/kubeconfig" -n "$n" 2> "$dir.log" || { tail -20 "$dir.log"; exit 1; }
