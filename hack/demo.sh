#!/usr/bin/env bash
# make demo: the user's journey on a real cluster on this machine. A control
# plane and three nodes (containerd, kubelet, kube-proxy) in network
# namespaces (hack/cluster.sh); ironlb installed with `kubectl apply` of the
# shipped manifests; an ingress controller's LoadBalancer Service gets an
# EXTERNAL-IP from the address pool a user applies, a LAN client curls it
# through the real kube-proxy, and it keeps answering when its node's cable
# is pulled.
#
# Every command a user would type is printed before it runs. kubectl and curl
# run inside the lab's namespaces (the root namespace routes off the
# machine), so they are shown with the wrapper that puts them there.
#
# Exits 0 when every step worked, otherwise non-zero naming the step. The
# cluster stays up afterwards; `make demo-down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

step_no=0
current=""
step() {
	step_no=$((step_no + 1))
	current="$*"
	printf '\n\033[1m== %d. %s\033[0m\n' "$step_no" "$*"
}
# kubectl: what the user types, run where the lab lets it reach the cluster.
kubectl() {
	printf '$ kubectl %s\n' "$*"
	bash hack/cluster.sh kubectl "$@"
}
quiet_kubectl() { bash hack/cluster.sh kubectl "$@"; }
client() { bash hack/cluster.sh exec client "$@"; }
fail() {
	printf '\n\033[31mdemo failed at step %d (%s): %s\033[0m\n' "$step_no" "$current" "$*" >&2
	printf 'logs: .cache/cluster/logs/; state: hack/cluster.sh status; remove the cluster with: make demo-down\n' >&2
	exit 1
}
trap 'rc=$?; [ $rc -eq 0 ] || fail "command exited $rc"' EXIT

# until_ok SECONDS CMD...: retry CMD every 0.2 s.
until_ok() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.2
	done
}

if [ "$(id -u)" -ne 0 ]; then
	echo "make demo needs root: it creates network and mount namespaces (nothing touches the host's own network)" >&2
	exit 1
fi

step "Start a cluster: control plane + nodes n1-n3 with containerd, kubelet and kube-proxy, and a LAN client (the first run builds Kubernetes: 20-35 minutes on 2 cores)"
if [ -f .cache/cluster/state ]; then
	echo "a demo cluster is already up; recreating it"
	bash hack/cluster.sh down >/dev/null
fi
bash hack/cluster.sh up
kubectl get nodes -o wide

step "Install ironlb from the shipped manifests"
kubectl apply -f manifests/namespace.yaml -f manifests/ironlb.yaml
pods_ready() {
	[ "$(quiet_kubectl -n ironlb-system get pods -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" -eq 4 ]
}
until_ok 120 pods_ready || {
	quiet_kubectl -n ironlb-system get pods -o wide || true
	fail "the controller and three speakers are not all Ready after 120 s"
}
kubectl get pods -n ironlb-system -o wide

step "Deploy the ingress controller (a stand-in answering /health) and its LoadBalancer Service, ports 80 and 443"
kubectl apply -f hack/demo/ingress-nginx.yaml
until_ok 120 sh -c '[ "$(bash hack/cluster.sh kubectl -n ingress-nginx get deploy ingress-nginx-controller -o jsonpath={.status.readyReplicas})" = 3 ]' ||
	fail "the backend Deployment is not Ready after 120 s"
kubectl get svc -n ingress-nginx
echo "EXTERNAL-IP is <pending>: no address pool yet."

step "Apply the address pool (the ConfigMap a user edits)"
kubectl apply -f hack/demo/address-pools.yaml

step "kubectl get svc: the EXTERNAL-IP"
vip=""
for _ in $(seq 1 150); do
	vip=$(quiet_kubectl -n ingress-nginx get svc ingress-nginx-controller -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
	[ -n "$vip" ] && break
	sleep 0.2
done
kubectl get svc -n ingress-nginx
[ -n "$vip" ] || fail "the Service got no EXTERNAL-IP (kubectl -n ironlb-system logs deploy/controller)"

step "curl http://$vip/health from the LAN client, through the announcing node's kube-proxy"
echo "\$ curl http://$vip/health"
answer=""
for _ in $(seq 1 100); do
	answer=$(client curl -s --max-time 1 "http://$vip/health" || true)
	[ -n "$answer" ] && break
	sleep 0.1
done
echo "$answer"
case $answer in
UP\ n[0-9]*) ;;
*) fail "no answer from $vip (kubectl -n ironlb-system logs ds/speaker)" ;;
esac
# Which node the client's ARP entry points at: with externalTrafficPolicy
# Cluster any node's pod may answer, so the announcing node is the one whose
# MAC the client learned.
mac=$(client ip neigh show "$vip" | awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }')
owner=""
case $mac in
02:00:c6:33:64:0b) owner=n1 ;;
02:00:c6:33:64:0c) owner=n2 ;;
02:00:c6:33:64:0d) owner=n3 ;;
esac
[ -n "$owner" ] || fail "cannot tell which node announces $vip (client neighbour entry: '$mac')"
echo "$vip is announced by node $owner (MAC $mac)"

step "Pull $owner's cable and keep requesting until another node answers"
echo "\$ hack/cluster.sh cut $owner"
start=$(bash hack/cluster.sh cut "$owner")
start=$(awk -v t="$start" 'BEGIN { printf "%.0f", t * 1000 }')
next=""
for _ in $(seq 1 400); do
	if client curl -s --max-time 0.1 "http://$vip/health" >/dev/null 2>&1; then
		newmac=$(client ip neigh show "$vip" | awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }')
		if [ -n "$newmac" ] && [ "$newmac" != "$mac" ]; then
			next=$newmac
			break
		fi
	fi
	sleep 0.02
done
took=$(($(date +%s%3N) - start))
[ -n "$next" ] || fail "no other node answered within 10 s"
echo "\$ curl http://$vip/health"
client curl -s --max-time 1 "http://$vip/health"
case $next in
02:00:c6:33:64:0b) nextnode=n1 ;;
02:00:c6:33:64:0c) nextnode=n2 ;;
*) nextnode=n3 ;;
esac
echo "failover: ${took} ms from pulling $owner's cable until $nextnode (MAC $next) answered"

step "Plug $owner back in"
echo "\$ hack/cluster.sh uncut $owner"
bash hack/cluster.sh uncut "$owner" >/dev/null
echo "$owner is back; the address moves back to it at most once"

trap - EXIT
cat <<MSG

Demo complete. The cluster is still running:
  hack/cluster.sh kubectl get svc -A
  hack/cluster.sh kubectl -n ironlb-system logs ds/speaker
  hack/cluster.sh exec client curl -s http://$vip/health
  hack/cluster.sh cut n1 / hack/cluster.sh uncut n1
  make demo-down          # remove everything
MSG
