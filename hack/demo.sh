#!/usr/bin/env bash
# make demo: the whole system on one machine. A real API server, the
# controller and speakers on three simulated nodes in network namespaces;
# a LoadBalancer Service gets an EXTERNAL-IP that a client can curl, and
# keeps answering when its node loses power.
#
# Exits 0 when every step worked, otherwise non-zero naming the step. The
# lab stays up afterwards; `make demo-down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

step_no=0
current=""
step() {
	step_no=$((step_no + 1))
	current="$*"
	printf '\n\033[1m== %d. %s\033[0m\n' "$step_no" "$*"
}
show() {
	printf '$ %s\n' "$*"
	"$@"
}
fail() {
	printf '\n\033[31mdemo failed at step %d (%s): %s\033[0m\n' "$step_no" "$current" "$*" >&2
	printf 'logs: .cache/lab/logs/; remove the lab with: make demo-down\n' >&2
	exit 1
}
trap 'rc=$?; [ $rc -eq 0 ] || fail "command exited $rc"' EXIT

if [ "$(id -u)" -ne 0 ]; then
	echo "make demo needs root: it creates network namespaces (nothing touches the host's own network)" >&2
	exit 1
fi

step "Start the lab: API server, controller, three nodes with speakers, a client (the first run builds kube-apiserver: 10-15 minutes)"
if [ -f .cache/lab/state ]; then
	echo "a lab is already up; recreating it"
	bash hack/lab.sh down >/dev/null
fi
bash hack/lab.sh up

step "Apply the address-pool ConfigMap"
show hack/kubectl apply -f hack/demo/address-pools.yaml

step "Create the ingress controller's LoadBalancer Service (ports 80 and 443)"
show hack/kubectl apply -f hack/demo/ingress-nginx.yaml

step "kubectl get svc: the EXTERNAL-IP"
vip=""
for _ in $(seq 1 100); do
	vip=$(hack/kubectl get svc -n ingress-nginx ingress-nginx-controller -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
	[ -n "$vip" ] && break
	sleep 0.1
done
show hack/kubectl get svc -n ingress-nginx
[ -n "$vip" ] || fail "the Service got no EXTERNAL-IP (see .cache/lab/logs/controller.log)"

step "curl http://$vip/health from the client, across the LAN"
answer=""
for _ in $(seq 1 50); do
	answer=$(bash hack/lab.sh exec client curl -s --max-time 1 "http://$vip/health" || true)
	[ -n "$answer" ] && break
	sleep 0.1
done
echo "$answer"
case $answer in
UP\ n[123]) ;;
*) fail "no answer from $vip (see .cache/lab/logs/speaker-n*.log)" ;;
esac
owner=${answer#UP }
echo "$vip is announced by node $owner"

step "Cut $owner off the LAN, as if it lost power, and keep requesting"
start=$(date +%s%3N)
bash hack/lab.sh cut "$owner"
next=""
for _ in $(seq 1 300); do
	next=$(bash hack/lab.sh exec client curl -s --max-time 0.1 "http://$vip/health" || true)
	case $next in UP\ n[123]) [ "$next" != "UP $owner" ] && break ;; esac
	next=""
	sleep 0.02
done
took=$(($(date +%s%3N) - start))
[ -n "$next" ] || fail "no other node answered within 10 s"
echo "$next"
echo "failover: ${took} ms from the cut until ${next#UP } answered"

step "Reconnect $owner"
bash hack/lab.sh uncut "$owner"
echo "$owner is back; the address moves back to it at most once, without a failed request"

trap - EXIT
cat <<MSG

Demo complete. The lab is still running:
  hack/kubectl get svc -A
  hack/lab.sh exec client curl -s http://$vip/health
  hack/lab.sh cut n1 / hack/lab.sh uncut n1
  hack/lab.sh speaker stop|kill|start n2
  make demo-down          # remove everything
MSG
