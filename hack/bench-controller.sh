#!/usr/bin/env bash
# Controller benchmark on a fresh control plane: cold-start convergence of
# N LoadBalancer Services by the controller binary as shipped (the args of
# manifests/ironlb.yaml, default client limits) against a plain client
# making the same writes, then a restart that must change no address and
# write nothing.
# Usage: hack/bench-controller.sh [N]   (default 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
dir=$(mktemp -d /tmp/ironlb-bench-XXXXXX)
# Binaries and the controller's logs; the logs are kept.
work=$(mktemp -d /tmp/ironlb-bench-work-XXXXXX)
cleanup() {
	bash hack/control-plane.sh down "$dir" >/dev/null 2>&1 || true
	rm -f "$work/controller" "$work/bench-controller"
}
trap cleanup EXIT INT TERM
go build -o "$work/controller" ./controller/cmd/controller
go build -o "$work/bench-controller" ./hack/bench-controller
bash hack/control-plane.sh up "$dir"
"$work/bench-controller" --kubeconfig "$dir/kubeconfig" -n "$n" --controller "$work/controller" \
	--manifest manifests/ironlb.yaml --log-dir "$work" 2> "$work/bench.log" ||
	{ tail -20 "$work/bench.log"; tail -20 "$work"/controller-*.log; exit 1; }
echo "controller logs: $work"
