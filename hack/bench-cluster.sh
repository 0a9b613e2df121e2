#!/usr/bin/env bash
# Benchmark on the real cluster (hack/cluster.sh): failover, rollouts, drain
# and the speaker's idle cost, measured as a LAN client sees it. Needs root.
#
#   hack/bench-cluster.sh [--trials N] [--idle SECONDS]
#
# Brings a fresh cluster up in its own directory (.cache/cluster-bench),
# installs ironlb from manifests/, and always takes the cluster down. The
# client (hack/lab/probe in the client namespace) makes one request every
# 20 ms on a fresh TCP connection with a 100 ms timeout and counts every
# failure. Prints one line per figure:
#
#   cluster failover node p50=<ms> max=<ms>
#       ms from pulling the announcing node's cable until the client's next
#       successful request (externalTrafficPolicy Local, so the answer names
#       the announcing node); the owner is looked up again each trial
#   cluster failback switches_max=<n> failed=<n>
#       after the cable is back: most changes of answering node in one
#       trial, failed requests over all trials
#   cluster rollout speaker failed=<n>
#       failed requests during `kubectl rollout restart daemonset/speaker`
#       until `rollout status` returns, over all trials
#   cluster rollout controller moved=<n> writes=<n>
#       LoadBalancer Services whose addresses changed / whose
#       resourceVersion changed across `rollout restart deployment/controller`
#   cluster drain failed=<n>
#       failed requests while `kubectl drain` evicts the backend from the
#       announcing node of a Local Service, over all trials
#   cluster speaker idle_cpu_pct=<percent of one core> rss_mb=<max>
#       mean per speaker over --idle seconds with nothing happening, and
#       the largest speaker VmRSS
#
# Targets: failover p50 <= 1000, max <= 2000; every failed, moved and
# writes 0; idle CPU <= 1 % of a core (DESIGN.md). Raw data stays in the
# directory printed at the start.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRIALS=5
IDLE=60
while (($#)); do
	case $1 in
	--trials) TRIALS=$2 && shift ;;
	--idle) IDLE=$2 && shift ;;
	*)
		sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
		exit 2
		;;
	esac
	shift
done

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
((EUID == 0)) || die "needs root (network and mount namespaces)"

export CLUSTER_DIR=$ROOT/.cache/cluster-bench
WORK=$(mktemp -d /tmp/ironlb-bench-cluster.XXXXXX)
NS=bench
declare -A NODE_OF=([02:00:c6:33:64:0b]=n1 [02:00:c6:33:64:0c]=n2 [02:00:c6:33:64:0d]=n3)

cluster() { bash "$ROOT/hack/cluster.sh" "$@"; }
kc() { cluster kubectl --request-timeout=30s "$@"; }
probe() { cluster exec client "$WORK/probe" "$@"; }
now_ms() { awk -v t="$EPOCHREALTIME" 'BEGIN { printf "%.3f", t * 1000 }'; }

BG=()
cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM HUP
	for pid in "${BG[@]}"; do kill "$pid" 2>/dev/null || true; done
	cluster down || true
	log "raw data kept in $WORK"
	exit "$rc"
}
[[ ! -f $CLUSTER_DIR/state ]] || die "a benchmark cluster is already up in $CLUSTER_DIR; take it down with CLUSTER_DIR=$CLUSTER_DIR hack/cluster.sh down"
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >&2
log "building the probe; raw data in $WORK"
(cd "$ROOT" && go build -o "$WORK/probe" ./hack/lab/probe)
cluster up

# ---- install, exactly as a user does ----

kc apply -f "$ROOT/manifests/namespace.yaml" -f "$ROOT/manifests/ironlb.yaml" >/dev/null
kc apply -f "$ROOT/hack/demo/address-pools.yaml" >/dev/null
kc --request-timeout=0 -n ironlb-system rollout status deployment/controller --timeout=180s >/dev/null
kc --request-timeout=0 -n ironlb-system rollout status daemonset/speaker --timeout=180s >/dev/null
kc create namespace "$NS" >/dev/null
kc apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {namespace: $NS, name: backend}
spec:
  replicas: 3
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
         nodeTaintsPolicy: Honor, labelSelector: {matchLabels: {app: backend}}}
      terminationGracePeriodSeconds: 15
      containers:
      - name: backend
        image: ironlb/backend:v0.1.0
        imagePullPolicy: IfNotPresent
        args: [--listen=:8080, --drain-delay=5s]
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {namespace: $NS, name: local}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: backend}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {namespace: $NS, name: cluster}
spec:
  type: LoadBalancer
  selector: {app: backend}
  ports: [{name: http, port: 80, targetPort: http}]
EOF
for i in 1 2 3; do
	kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {namespace: $NS, name: extra-$i}
spec:
  type: LoadBalancer
  selector: {app: backend}
  ports: [{name: http, port: $((8000 + i)), targetPort: http}]
EOF
done
kc --request-timeout=0 -n "$NS" rollout status deployment/backend --timeout=180s >/dev/null

vip_of() {
	local v i
	for ((i = 0; i < 150; i++)); do
		v=$(kc -n "$NS" get svc "$1" -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
		[[ -n $v ]] && echo "$v" && return 0
		sleep 0.2
	done
	die "Service $NS/$1 got no address"
}
LOCAL_VIP=$(vip_of local)
CLUSTER_VIP=$(vip_of cluster)
log "Services: local $LOCAL_VIP, cluster $CLUSTER_VIP"

# owner VIP: the node whose MAC alone answers ARP for VIP (waits up to 30 s).
owner() {
	local i macs
	for ((i = 0; i < 150; i++)); do
		macs=$(probe arp --ip "$1" --wait 100ms | jq -r '.macs | join(" ")')
		if [[ -n $macs && $macs != *" "* ]]; then
			echo "${NODE_OF[$macs]}"
			return 0
		fi
		[[ $macs == *" "* ]] && log "two MACs answer for $1: $macs"
		sleep 0.2
	done
	die "no single owner for $1 after 30 s"
}

bg_probe() { # bg_probe OUT STOPFILE ARGS...
	local out=$1 stop=$2
	shift 2
	rm -f "$stop"
	probe "$@" --until-file "$stop" >"$out" 2>>"$WORK/probe.err" &
	BG+=($!)
}
stop_bg() {
	local pid
	touch "$1"
	for pid in "${BG[@]}"; do wait "$pid" 2>/dev/null || true; done
	BG=()
}
await_ok() { # await_ok FILE SINCE_MS NOT_NODE
	local i
	for ((i = 0; i < 300; i++)); do
		if jq -e --argjson s "$2" --arg n "$3" 'select(.ok and .unix_ms >= $s and .node != $n)' "$1" 2>/dev/null | grep -q .; then
			return 0
		fi
		sleep 0.1
	done
	log "no successful request from another node 30 s after the cut"
	return 1
}
failed_of() { jq -s 'map(select(.ok | not)) | length' "$1"; }
failed_detail() { jq -r 'select(.ok | not) | "+\(.unix_ms | floor) \(.err)"' "$1" | head -n 5 | tr '\n' ';'; }

pctl() { # pctl P FILE KEY: percentile P of KEY=value over FILE's lines (nearest rank)
	python3 - "$@" <<'EOF'
import math, re, sys
p, path, key = float(sys.argv[1]), sys.argv[2], sys.argv[3]
v = sorted(float(m.group(1)) for l in open(path) for m in [re.search(r"\b" + key + r"=(-?[0-9.]+)", l)] if m)
print(f"{v[max(0, math.ceil(p / 100 * len(v)) - 1)]:.0f}" if v else "n/a")
EOF
}
sum_key() { awk -v k="$2" '{ for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) s += substr($i, length(k) + 2) } END { print s + 0 }' "$1"; }

RESULTS=()
say() {
	RESULTS+=("$*")
	echo "$*"
}

# ---- node cut ----

node_trial() {
	local i=$1 o out stop tcut tun
	o=$(owner "$LOCAL_VIP")
	out=$WORK/node-$i.jsonl
	stop=$WORK/stop
	bg_probe "$out" "$stop" http --url "http://$LOCAL_VIP/health" --interval 20ms --timeout 100ms
	sleep 1
	tcut=$(cluster cut "$o" | awk '{ printf "%.3f", $1 * 1000 }')
	await_ok "$out" "$tcut" "$o" || true
	sleep 1
	tun=$(cluster uncut "$o" | awk '{ printf "%.3f", $1 * 1000 }')
	sleep 8
	stop_bg "$stop"
	python3 - "$out" "$o" "$tcut" "$tun" <<'EOF' | tee -a "$WORK/node.results"
import json, sys
path, old, tcut, tun = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rs = sorted((json.loads(l) for l in open(path) if l.strip()), key=lambda r: r["t_ms"])
cut = [r for r in rs if tcut <= r["unix_ms"] < tun]
back = [r for r in cut if r["ok"] and r["node"] != old]
fo = back[0]["unix_ms"] + back[0]["lat_ms"] - tcut if back else -1
new = back[0]["node"] if back else "?"
prev, switches, failed_back = new, 0, 0
for r in rs:
    if r["unix_ms"] < tun:
        continue
    if not r["ok"]:
        failed_back += 1
        continue
    if r["node"] != prev:
        switches += 1
        prev = r["node"]
print(f"failover_ms={fo:.0f} cut={old} new={new} failed_cut={sum(1 for r in cut if not r['ok'])} "
      f"switches={switches} failed_back={failed_back} final={prev}")
EOF
	# The cut node's kubelet and speaker catch up before the next trial.
	sleep 2
}

log "node cut: $TRIALS trials on $LOCAL_VIP"
for ((i = 1; i <= TRIALS; i++)); do
	printf 'node trial %d: ' "$i"
	node_trial "$i"
done
say "cluster failover node p50=$(pctl 50 "$WORK/node.results" failover_ms) max=$(pctl 100 "$WORK/node.results" failover_ms)"
say "cluster failback switches_max=$(pctl 100 "$WORK/node.results" switches) failed=$(sum_key "$WORK/node.results" failed_back)"

# ---- speaker rollout ----

log "speaker rollout: $TRIALS trials on $CLUSTER_VIP"
: >"$WORK/rollout-speaker.results"
for ((i = 1; i <= TRIALS; i++)); do
	out=$WORK/rollout-speaker-$i.jsonl
	bg_probe "$out" "$WORK/stop" http --url "http://$CLUSTER_VIP/health" --interval 20ms --timeout 100ms
	sleep 1
	t0=$(now_ms)
	kc -n ironlb-system rollout restart daemonset/speaker >/dev/null
	kc --request-timeout=0 -n ironlb-system rollout status daemonset/speaker --timeout=300s >/dev/null
	took=$(awk -v a="$t0" -v b="$(now_ms)" 'BEGIN { printf "%.0f", b - a }')
	sleep 3
	stop_bg "$WORK/stop"
	echo "rollout_ms=$took requests=$(wc -l <"$out") failed=$(failed_of "$out") $(failed_detail "$out")" | tee -a "$WORK/rollout-speaker.results"
done
say "cluster rollout speaker failed=$(sum_key "$WORK/rollout-speaker.results" failed)"

# ---- controller rollout ----

# svc_state: "ns/name ips resourceVersion" for every LoadBalancer Service.
svc_state() {
	kc get svc -A -o json | jq -r '.items[] | select(.spec.type == "LoadBalancer") |
		"\(.metadata.namespace)/\(.metadata.name) \([.status.loadBalancer.ingress[]?.ip] | join(",")) \(.metadata.resourceVersion)"' | sort
}
log "controller rollout: $TRIALS trials"
: >"$WORK/rollout-controller.results"
for ((i = 1; i <= TRIALS; i++)); do
	svc_state >"$WORK/ctl-before-$i"
	kc -n ironlb-system rollout restart deployment/controller >/dev/null
	kc --request-timeout=0 -n ironlb-system rollout status deployment/controller --timeout=300s >/dev/null
	# The new replica takes the lease, restores every address and
	# reconciles every Service; give it time to write if it were going to.
	sleep 15
	svc_state >"$WORK/ctl-after-$i"
	moved=$(join "$WORK/ctl-before-$i" "$WORK/ctl-after-$i" | awk '$2 != $4' | wc -l)
	writes=$(join "$WORK/ctl-before-$i" "$WORK/ctl-after-$i" | awk '$3 != $5' | wc -l)
	echo "services=$(wc -l <"$WORK/ctl-before-$i") moved=$moved writes=$writes" | tee -a "$WORK/rollout-controller.results"
done
say "cluster rollout controller moved=$(sum_key "$WORK/rollout-controller.results" moved) writes=$(sum_key "$WORK/rollout-controller.results" writes)"

# ---- drain ----

backends_ready() { [[ $(kc -n "$NS" get deploy backend -o jsonpath='{.status.readyReplicas}') == 3 ]]; }
log "drain: $TRIALS trials on $LOCAL_VIP"
: >"$WORK/drain.results"
for ((i = 1; i <= TRIALS; i++)); do
	o=$(owner "$LOCAL_VIP")
	out=$WORK/drain-$i.jsonl
	bg_probe "$out" "$WORK/stop" http --url "http://$LOCAL_VIP/health" --interval 20ms --timeout 100ms
	sleep 1
	kc --request-timeout=0 drain "$o" --ignore-daemonsets --delete-emptydir-data --timeout=120s >"$WORK/drain-$i.log" 2>&1
	# The evicted backend serves its drain delay after the eviction returns.
	sleep 8
	stop_bg "$WORK/stop"
	kc uncordon "$o" >/dev/null
	echo "node=$o requests=$(wc -l <"$out") failed=$(failed_of "$out") after=$(owner "$LOCAL_VIP") $(failed_detail "$out")" | tee -a "$WORK/drain.results"
	for ((j = 0; j < 120; j++)); do
		backends_ready && break
		sleep 1
	done
	backends_ready || die "the backend did not get 3 ready replicas back after uncordon"
	sleep 3
done
say "cluster drain failed=$(sum_key "$WORK/drain.results" failed)"

# ---- idle ----

# speaker_pids: the speaker processes of every node (the pods' processes
# live in the node's cgroups).
speaker_pids() {
	local p
	for p in /proc/[0-9]*; do
		[[ $(cat "$p/comm" 2>/dev/null) == speaker ]] || continue
		grep -q "/ironlb-$(cluster state suffix)-" "$p/cgroup" 2>/dev/null && echo "${p#/proc/}"
	done
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
log "idle: sampling the speakers for $IDLE s"
mapfile -t pids < <(speaker_pids)
((${#pids[@]} == 3)) || die "found ${#pids[@]} speaker processes, want 3"
declare -A t0
for p in "${pids[@]}"; do t0[$p]=$(cpu_ticks "$p"); done
start=$EPOCHREALTIME
sleep "$IDLE"
end=$EPOCHREALTIME
hz=$(getconf CLK_TCK)
total=0
rss_max=0
per=""
for p in "${pids[@]}"; do
	d=$(($(cpu_ticks "$p") - t0[$p]))
	total=$((total + d))
	kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status")
	((kb > rss_max)) && rss_max=$kb
	per+="$(awk -v d="$d" -v hz="$hz" -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", 100 * d / hz / (b - a) }')% "
done
say "cluster speaker idle_cpu_pct=$(awk -v d="$total" -v n="${#pids[@]}" -v hz="$hz" -v a="$start" -v b="$end" \
	'BEGIN { printf "%.2f", 100 * d / hz / (b - a) / n }') rss_mb=$(awk -v k="$rss_max" 'BEGIN { printf "%.1f", k / 1024 }')"
log "per speaker: $per"

echo
echo "==== summary ($TRIALS trials; raw data in $WORK)"
printf '%s\n' "${RESULTS[@]}"
