#!/usr/bin/env bash
# The network lab: a LAN of network namespaces with a real control plane, the
# controller, a kube-proxy stand-in + backend (hack/lab/node) and a speaker
# on each of three nodes, and a client. Needs root.
#
#   hack/lab.sh up                         build and start everything (see below)
#   hack/lab.sh down                       stop what the lab started, delete its namespaces (idempotent)
#   hack/lab.sh status                     namespaces, links, processes, Services
#   hack/lab.sh exec n1|n2|n3|client|cp|lan CMD...   run CMD in that namespace
#   hack/lab.sh speaker start|stop|kill|restart|hook NODE|all   (hook: SIGUSR1, for a -tags testhooks build)
#                                          start (rebuilds the binary), SIGTERM, SIGKILL
#   hack/lab.sh cut NODE / uncut NODE      set the node's bridge-side veth down/up (a pulled cable)
#   hack/lab.sh apiserver stop|start       SIGTERM the control plane's kube-apiserver / start it
#                                          again with the same command line (and wait for /readyz)
#   hack/lab.sh endpoints SERVICE NS [NODE...]
#                                          write the Service's EndpointSlice(s) with ready
#                                          endpoints on NODEs (none: no endpoints)
#   hack/kubectl ...                       kubectl against the lab (runs inside the cp namespace)
#
# Topology (namespace names carry a per-run suffix, ilb-XXXXXX-ROLE):
#
#   lan     bridge br0 (STP off, multicast snooping off), one port per other
#           namespace, named after it (cp, n1, n2, n3, client). No addresses,
#           IPv6 disabled: it is only the wire.
#   cp      eth0 198.51.100.5: etcd + kube-apiserver (hack/control-plane.sh),
#           the controller (metrics :7472, health :7473)
#   n1..n3  eth0 198.51.100.11-13, 2001:db8:100::11-13: lab-node (kube-proxy
#           stand-in: nftables DNAT VIP:port -> nodeIP:NodePort, HTTP backend
#           answering /health with "UP nX"), the speaker (memberlist :7946,
#           metrics :7474, health :7475). arp_ignore=1, arp_announce=2; no VIP
#           is ever assigned to an interface.
#   client  eth0 198.51.100.2, 2001:db8:100::2
#
# MACs are fixed: 02:00:c6:33:64:XX with XX the last IPv4 octet in hex
# (n1 = 02:00:c6:33:64:0b). IPv6 addresses are added nodad, and accept_dad
# and accept_ra are off, so link-local addresses are usable at once.
# Nothing is ever created in the root namespace; no default route, no other
# address ranges.
#
# API objects: namespace ironlb-system, Nodes n1-n3 (Ready, InternalIPs set
# through the status subresource), the ConfigMap ironlb-system/config with
# pool "default" (198.51.100.100-110, 2001:db8:100::100-110, layer2). The
# controller creates the memberlist Secret. No EndpointSlices unless you run
# `endpoints`.
#
# Files (git-ignored): .cache/lab/state (namespaces and PIDs), .cache/lab/bin,
# .cache/lab/logs (controller.log, node-nX.log, speaker-nX.log, and on down
# the control plane's etcd.log/kube-apiserver.log), .cache/lab/kubeconfig,
# .cache/lab/cp (the control plane's directory).
#
# Environment:
#   LAB_NO_SPEAKER=1   do not build or start speakers in `up`
#   LAB_SPEAKER_BIN=F  use the speaker binary F (copied into .cache/lab/bin)
#   LAB_SPEAKER_ARGS=… extra speaker flags, split on whitespace (e.g. --profiling)
#                      instead of building ./speaker/cmd/speaker (up, speaker start)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB=$ROOT/.cache/lab
STATE=$LAB/state
BIN=$LAB/bin
LOGS=$LAB/logs
RUN=$LAB/run
CP_DIR=$LAB/cp
KUBECONFIG_LAB=$LAB/kubeconfig
NODES=(n1 n2 n3)
ROLES=(lan cp n1 n2 n3 client)
CP_IP=198.51.100.5
POOL4=198.51.100.100-198.51.100.110
POOL6=2001:db8:100::100-2001:db8:100::110

log() { printf 'lab: %s\n' "$*" >&2; }
warn() { printf 'lab: WARNING: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
need_root() { ((EUID == 0)) || die "the lab needs root (network namespaces, nftables)"; }

# Addresses: ip4 ROLE, ip6 ROLE (empty for roles without one), mac ROLE.
ip4() {
	case $1 in
	cp) echo "$CP_IP" ;;
	client) echo 198.51.100.2 ;;
	n[1-3]) echo "198.51.100.1${1#n}" ;;
	*) return 1 ;;
	esac
}
ip6() {
	case $1 in
	client) echo 2001:db8:100::2 ;;
	n[1-3]) echo "2001:db8:100::1${1#n}" ;;
	*) echo "" ;;
	esac
}
mac() {
	local ip
	ip=$(ip4 "$1")
	printf '02:00:c6:33:64:%02x\n' "${ip##*.}"
}

is_node() { [[ " ${NODES[*]} " == *" $1 "* ]]; }
is_role() { [[ " ${ROLES[*]} " == *" $1 "* ]]; }

# apt_install CMD PKG: install PKG unless CMD is already on PATH.
apt_install() {
	command -v "$1" >/dev/null 2>&1 && return 0
	log "installing $2 with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
		apt-get update -q -o DPkg::Lock::Timeout=300 >&2
	fi
	if ! apt-get install -y -q -o DPkg::Lock::Timeout=300 "$2" >&2; then
		apt-get update -q -o DPkg::Lock::Timeout=300 >&2
		apt-get install -y -q -o DPkg::Lock::Timeout=300 "$2" >&2
	fi
	command -v "$1" >/dev/null 2>&1 || die "$2 installed but $1 is not on PATH"
}

# ---- state: KEY=VALUE lines in .cache/lab/state ----

state_get() { [[ -f $STATE ]] && sed -n "s/^$1=//p" "$STATE" | tail -n 1; }
state_set() {
	(
		flock 7
		{
			grep -v "^$1=" "$STATE" 2>/dev/null || true
			echo "$1=$2"
		} >"$STATE.tmp"
		mv "$STATE.tmp" "$STATE"
	) 7>"$LAB/.state.lock"
}
state_del() {
	[[ -f $STATE ]] || return 0
	(
		flock 7
		{ grep -v "^$1=" "$STATE" || true; } >"$STATE.tmp"
		mv "$STATE.tmp" "$STATE"
	) 7>"$LAB/.state.lock"
}
require_up() { [[ -f $STATE ]] || die "the lab is not up (no ${STATE#"$ROOT"/}); run hack/lab.sh up"; }
ns_of() {
	local ns
	ns=$(state_get "ns_$1")
	[[ -n $ns ]] || die "no namespace recorded for '$1'"
	echo "$ns"
}

# kc ARGS...: kubectl inside the cp namespace (the root namespace cannot
# reach 198.51.100.5).
kc() {
	ip netns exec "$(ns_of cp)" "$KUBECTL" --kubeconfig "$KUBECONFIG_LAB" --request-timeout=10s "$@"
}

# ---- processes ----

# The namespace a lab process runs in: controller -> cp, node-n1 and
# speaker-n1 -> n1.
proc_role() {
	case $1 in
	controller) echo cp ;;
	node-* | speaker-*) echo "${1#*-}" ;;
	*) return 1 ;;
	esac
}

# proc_pid NAME: the recorded PID if that process is alive and still ours:
# it runs a binary from .cache/lab/bin in the recorded namespace (guards
# against PID reuse; zombies have no cmdline).
proc_pid() {
	local name=$1 pid cmdline ns netns
	pid=$(state_get "pid_$name")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ $cmdline == "$BIN/"* ]] || return 1
	ns=$(state_get "ns_$(proc_role "$name")")
	if [[ -n $ns && -e /run/netns/$ns ]]; then
		netns=$(readlink "/proc/$pid/ns/net" 2>/dev/null) || return 1
		[[ $netns == "net:[$(stat -L -c %i "/run/netns/$ns")]" ]] || return 1
	fi
	echo "$pid"
}

# start_proc NAME CMD...: run CMD detached in its own session inside NAME's
# namespace, log appended to logs/NAME.log, PID recorded in the state.
start_proc() {
	local name=$1 ns pidfile log i
	shift
	ns=$(ns_of "$(proc_role "$name")")
	pidfile=$RUN/$name.pid
	log=$LOGS/$name.log
	mkdir -p "$RUN" "$LOGS"
	rm -f "$pidfile"
	printf '==== %s: %s\n' "$(date '+%F %T')" "$*" >>"$log"
	# shellcheck disable=SC2016 # $$ and $@ expand in the child shell.
	ip netns exec "$ns" setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
		>>"$log" 2>&1 </dev/null 7>&- 8>&- 9>&- &
	for ((i = 0; i < 100; i++)); do
		[[ -s $pidfile ]] && break
		sleep 0.05
	done
	[[ -s $pidfile ]] || die "$name did not start (see ${log#"$ROOT"/})"
	state_set "pid_$name" "$(cat "$pidfile")"
	rm -f "$pidfile"
}

# stop_procs SIGNAL NAME...: signal every live one, wait up to 5 s for all
# to exit, SIGKILL what is left after a SIGTERM.
stop_procs() {
	local sig=$1 name pid i left
	shift
	local -a names=()
	for name in "$@"; do
		pid=$(proc_pid "$name") || {
			state_del "pid_$name"
			continue
		}
		kill "-$sig" "$pid" 2>/dev/null || true
		names+=("$name")
	done
	((${#names[@]})) || return 0
	for ((i = 0; i < 100; i++)); do
		left=0
		for name in "${names[@]}"; do
			proc_pid "$name" >/dev/null && left=1
		done
		((left)) || break
		if ((i == 50)) && [[ $sig == TERM ]]; then
			for name in "${names[@]}"; do
				pid=$(proc_pid "$name") || continue
				warn "$name (pid $pid) ignored SIGTERM for 5 s; sending SIGKILL"
				kill -KILL "$pid" 2>/dev/null || true
			done
		fi
		sleep 0.1
	done
	for name in "${names[@]}"; do
		if pid=$(proc_pid "$name"); then
			warn "$name (pid $pid) is still running"
		else
			state_del "pid_$name"
		fi
	done
}

# ---- builds (root namespace: they may need the module proxy) ----

go_build() {
	local out=$1 pkg=$2
	(cd "$ROOT" && go build -o "$out" "$pkg")
}

# build_speaker: 0 when .cache/lab/bin/speaker is fresh, 1 (with a warning)
# when ./speaker/cmd/speaker does not build yet.
# With LAB_SPEAKER_BIN set, that binary is copied in instead of building.
build_speaker() {
	mkdir -p "$BIN" "$LOGS"
	if [[ -n ${LAB_SPEAKER_BIN:-} ]]; then
		[[ -x $LAB_SPEAKER_BIN ]] || die "LAB_SPEAKER_BIN=$LAB_SPEAKER_BIN is not an executable"
		cp -f "$LAB_SPEAKER_BIN" "$BIN/speaker.tmp"
		mv -f "$BIN/speaker.tmp" "$BIN/speaker"
		return 0
	fi
	if go_build "$BIN/speaker" ./speaker/cmd/speaker >"$LOGS/speaker-build.log" 2>&1; then
		return 0
	fi
	rm -f "$BIN/speaker"
	warn "the speaker does not build (yet): go build ./speaker/cmd/speaker says:"
	sed 's/^/lab:   /' "$LOGS/speaker-build.log" | head -n 15 >&2
	return 1
}

speaker_start() {
	local node=$1 ip peers="" n
	if proc_pid "speaker-$node" >/dev/null; then
		log "speaker-$node is already running (pid $(proc_pid "speaker-$node"))"
		return 0
	fi
	[[ -x $BIN/speaker ]] || die "no speaker binary"
	for n in "${NODES[@]}"; do peers+=${peers:+,}$(ip4 "$n"):7946; done
	ip=$(ip4 "$node")
	# GOMAXPROCS as manifests/ironlb.yaml sets it.
	start_proc "speaker-$node" env GOMAXPROCS=1 "$BIN/speaker" --node-name "$node" --kubeconfig "$KUBECONFIG_LAB" \
		--bind-addr "$ip" --peers "$peers" --interfaces eth0 \
		--metrics-addr "$ip:7474" --health-addr "$ip:7475" ${LAB_SPEAKER_ARGS:-}
	log "speaker-$node started (pid $(state_get "pid_speaker-$node"), log ${LOGS#"$ROOT"/}/speaker-$node.log)"
}

# ---- up ----

random_suffix() {
	local chars=abcdefghijklmnopqrstuvwxyz0123456789 s="" i
	for ((i = 0; i < 6; i++)); do s+=${chars:SRANDOM%36:1}; done
	echo "$s"
}

nsysctl() {
	local ns=$1
	shift
	ip netns exec "$ns" sysctl -q -w "$@" >/dev/null
}

make_network() {
	local suffix=$1 role ns lan
	for role in "${ROLES[@]}"; do
		state_set "ns_$role" "ilb-$suffix-$role"
	done
	for role in "${ROLES[@]}"; do
		ns=ilb-$suffix-$role
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		if [[ $role == lan ]]; then
			# Only the wire: no IPv6 on the bridge or its ports.
			nsysctl "$ns" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
		else
			# Applies to eth0, which is created after this.
			nsysctl "$ns" net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
				net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
		fi
		if is_node "$role"; then
			# The kernel answers ARP only for addresses on the asking
			# interface and announces only its own: never for a VIP.
			nsysctl "$ns" net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
		fi
	done
	lan=ilb-$suffix-lan
	ip -n "$lan" link add br0 type bridge stp_state 0 mcast_snooping 0
	ip -n "$lan" link set br0 up
	for role in "${ROLES[@]}"; do
		[[ $role == lan ]] && continue
		ns=ilb-$suffix-$role
		# Created inside lan, the peer born straight in its namespace.
		ip -n "$lan" link add "$role" type veth peer name eth0 netns "$ns" address "$(mac "$role")"
		ip -n "$lan" link set "$role" master br0
		ip -n "$lan" link set "$role" up
		ip -n "$ns" addr add "$(ip4 "$role")/24" dev eth0
		if [[ -n $(ip6 "$role") ]]; then
			ip -n "$ns" addr add "$(ip6 "$role")/64" dev eth0 nodad
		fi
		ip -n "$ns" link set eth0 up
	done
}

api_objects() {
	local n
	{
		cat <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: ironlb-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  namespace: ironlb-system
  name: config
data:
  config: |
    address-pools:
    - name: default
      protocol: layer2
      addresses:
      - $POOL4
      - $POOL6
EOF
		for n in "${NODES[@]}"; do
			cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $n
  labels:
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
EOF
		done
	} | kc apply -f - >/dev/null
	local now
	now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	for n in "${NODES[@]}"; do
		kc patch node "$n" --subresource=status --type=merge -p "{\"status\":{
			\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"LabReady\",
			  \"message\":\"set by hack/lab.sh (no kubelet)\",\"lastHeartbeatTime\":\"$now\",\"lastTransitionTime\":\"$now\"}],
			\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$(ip4 "$n")\"},
			  {\"type\":\"InternalIP\",\"address\":\"$(ip6 "$n")\"},
			  {\"type\":\"Hostname\",\"address\":\"$n\"}]}}" >/dev/null
	done
}

# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds.
wait_for() {
	local secs=$1 deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$what not ready after $secs s"
		sleep 0.2
	done
}

controller_ready() {
	[[ $(ip netns exec "$(ns_of cp)" curl -fsS --max-time 1 "http://$CP_IP:7473/readyz") == ok ]]
}
node_ready() { grep -q 'watching LoadBalancer Services' "$LOGS/node-$1.log"; }

on_up_exit() {
	local rc=$?
	((rc == 0)) && return 0
	log "up failed (exit $rc); removing everything it made"
	do_down || true
	exit "$rc"
}

cmd_up() {
	local t0 suffix n speakers=0 built=0
	need_root
	t0=$EPOCHREALTIME
	mkdir -p "$LAB"
	exec 9>"$LAB/.lab.lock"
	flock -n 9 || die "another hack/lab.sh up/down is running"
	[[ ! -e $STATE ]] || die "the lab is already up ($(state_get suffix)); run hack/lab.sh down first"
	[[ ! -e $LAB/.ironlb-control-plane ]] ||
		die "hack/control-plane.sh is using ${LAB#"$ROOT"/} as its directory; stop it with hack/control-plane.sh down"

	apt_install ip iproute2
	apt_install nft nftables
	apt_install curl curl
	command -v go >/dev/null || die "go is not on PATH"
	bash "$ROOT/hack/control-plane.sh" build 9>&-
	KUBECTL=$(bash "$ROOT/hack/control-plane.sh" kubectl-path)

	log "building the controller and lab-node"
	mkdir -p "$BIN"
	go_build "$BIN/controller" ./controller/cmd/controller
	go_build "$BIN/lab-node" ./hack/lab/node
	if [[ -z ${LAB_NO_SPEAKER:-} ]]; then
		if build_speaker; then
			built=1
		else
			warn "continuing without speakers; start them later with: hack/lab.sh speaker start all"
		fi
	fi
	local tb=$EPOCHREALTIME

	rm -rf "$LOGS" "$RUN" "$CP_DIR" "$KUBECONFIG_LAB"
	mkdir -p "$LOGS" "$RUN"
	trap on_up_exit EXIT
	trap 'exit 130' INT TERM HUP
	suffix=$(random_suffix)
	state_set suffix "$suffix"
	state_set created "$(date '+%F %T')"
	make_network "$suffix"
	log "network up: ilb-$suffix-{${ROLES[*]}}"

	ip netns exec "$(ns_of cp)" env BIND_ADDRESS="$CP_IP" bash "$ROOT/hack/control-plane.sh" up "$CP_DIR" 9>&-
	state_set pid_etcd "$(cat "$CP_DIR/etcd.pid")"
	state_set pid_kube-apiserver "$(cat "$CP_DIR/kube-apiserver.pid")"
	(
		umask 077
		cp "$CP_DIR/kubeconfig" "$KUBECONFIG_LAB"
	)
	api_objects

	start_proc controller "$BIN/controller" --kubeconfig "$CP_DIR/kubeconfig" --leader-elect=false \
		--metrics-addr "$CP_IP:7472" --health-addr "$CP_IP:7473"
	for n in "${NODES[@]}"; do
		start_proc "node-$n" "$BIN/lab-node" --node-name "$n" --kubeconfig "$KUBECONFIG_LAB" \
			--node-ip "$(ip4 "$n"),$(ip6 "$n")"
	done
	wait_for 30 "the controller (${LOGS#"$ROOT"/}/controller.log)" controller_ready
	for n in "${NODES[@]}"; do
		wait_for 30 "lab-node $n (${LOGS#"$ROOT"/}/node-$n.log)" node_ready "$n"
	done
	if ((built)); then
		wait_for 15 "the memberlist Secret" kc get secret -n ironlb-system memberlist
		for n in "${NODES[@]}"; do
			speaker_start "$n"
		done
		sleep 0.5
		for n in "${NODES[@]}"; do
			if proc_pid "speaker-$n" >/dev/null; then
				speakers=$((speakers + 1))
			else
				warn "speaker-$n exited at once; last lines of ${LOGS#"$ROOT"/}/speaker-$n.log:"
				tail -n 10 "$LOGS/speaker-$n.log" >&2
			fi
		done
	fi
	trap - EXIT INT TERM HUP

	log "up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s" \
		"(builds $(awk -v a="$t0" -v b="$tb" 'BEGIN { printf "%.1f", b - a }') s);" \
		"speakers running: $speakers/${#NODES[@]}"
	log "try: hack/kubectl create service loadbalancer web --tcp=80:80 && hack/kubectl get svc web"
	log "     hack/lab.sh exec client curl -s --max-time 1 http://198.51.100.100/health"
}

# ---- down ----

recorded_procs() { sed -n 's/^pid_\([^=]*\)=.*/\1/p' "$STATE"; }

do_down() {
	local role ns pid pids name
	[[ -f $STATE ]] || {
		log "the lab is not up; nothing to do"
		return 0
	}
	local -a procs=()
	while read -r name; do
		[[ $name == etcd || $name == kube-apiserver ]] || procs+=("$name")
	done < <(recorded_procs)
	((${#procs[@]} == 0)) || stop_procs TERM "${procs[@]}"
	if [[ -d $CP_DIR ]]; then
		mkdir -p "$LOGS"
		cp -f "$CP_DIR"/*.log "$LOGS"/ 2>/dev/null || true
		bash "$ROOT/hack/control-plane.sh" down "$CP_DIR" 9>&- || warn "hack/control-plane.sh down failed"
	fi
	state_del pid_etcd
	state_del pid_kube-apiserver
	for role in "${ROLES[@]}"; do
		ns=$(state_get "ns_$role")
		[[ -n $ns && -e /run/netns/$ns ]] || continue
		# Anything still in a lab namespace was started in it by the lab
		# (say, hack/lab.sh exec): stop it by PID so the namespace goes.
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		if [[ -n $pids ]]; then
			warn "stopping processes left in $ns: $(echo "$pids" | tr '\n' ' ')"
			for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
			sleep 0.5
			for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
		fi
		ip netns del "$ns"
	done
	rm -rf "$RUN" "$KUBECONFIG_LAB" "$LAB/kube-apiserver.cmdline"
	rm -f "$STATE" "$STATE.tmp"
	log "down"
}

cmd_down() {
	need_root
	[[ -d $LAB ]] || {
		log "the lab is not up; nothing to do"
		return 0
	}
	exec 9>"$LAB/.lab.lock"
	flock 9
	do_down
}

# ---- the rest ----

cmd_status() {
	local role ns name pid state
	require_up
	echo "lab ilb-$(state_get suffix)-*, up since $(state_get created)"
	echo "namespaces and links (bridge side; DOWN = cut):"
	for role in "${ROLES[@]}"; do
		ns=$(state_get "ns_$role")
		if [[ ! -e /run/netns/$ns ]]; then
			printf '  %-7s %-20s MISSING\n' "$role" "$ns"
			continue
		fi
		if [[ $role == lan ]]; then
			printf '  %-7s %-20s bridge br0\n' "$role" "$ns"
			continue
		fi
		state=$(ip -n "$(state_get ns_lan)" -br link show dev "$role" 2>/dev/null | awk '{ print $2 }')
		printf '  %-7s %-20s %-6s %-18s %s %s\n' "$role" "$ns" "${state:-?}" "$(mac "$role")" "$(ip4 "$role")" "$(ip6 "$role")"
	done
	echo "processes:"
	while read -r name; do
		case $name in
		etcd | kube-apiserver)
			pid=$(state_get "pid_$name")
			if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$CP_DIR/"; then
				printf '  %-16s pid %-8s running\n' "$name" "$pid"
			else
				printf '  %-16s pid %-8s NOT RUNNING\n' "$name" "$pid"
			fi
			;;
		*)
			if pid=$(proc_pid "$name"); then
				printf '  %-16s pid %-8s running\n' "$name" "$pid"
			else
				printf '  %-16s pid %-8s NOT RUNNING\n' "$name" "$(state_get "pid_$name")"
			fi
			;;
		esac
	done < <(recorded_procs)
	for name in "${NODES[@]}"; do
		[[ -n $(state_get "pid_speaker-$name") ]] || printf '  %-16s not running\n' "speaker-$name"
	done
	echo "Services:"
	kc get svc -A -o wide 2>&1 | sed 's/^/  /' || true
}

cmd_exec() {
	(($# >= 2)) || die "usage: hack/lab.sh exec n1|n2|n3|client|cp|lan CMD..."
	is_role "$1" || die "unknown namespace '$1' (one of: ${ROLES[*]})"
	require_up
	local ns
	ns=$(ns_of "$1")
	shift
	exec ip netns exec "$ns" "$@"
}

cmd_speaker() {
	local action=${1:-} target=${2:-} n pid
	local -a nodes
	[[ -n $target ]] || die "usage: hack/lab.sh speaker start|stop|kill|restart|hook NODE|all"
	need_root
	require_up
	if [[ $target == all ]]; then
		nodes=("${NODES[@]}")
	else
		is_node "$target" || die "unknown node '$target' (one of: ${NODES[*]} all)"
		nodes=("$target")
	fi
	case $action in
	start | restart)
		build_speaker || die "no speaker to start"
		if [[ $action == restart ]]; then
			stop_procs TERM "${nodes[@]/#/speaker-}"
		fi
		for n in "${nodes[@]}"; do speaker_start "$n"; done
		;;
	stop)
		stop_procs TERM "${nodes[@]/#/speaker-}"
		log "stopped (SIGTERM): ${nodes[*]/#/speaker-}"
		;;
	kill)
		stop_procs KILL "${nodes[@]/#/speaker-}"
		log "killed (SIGKILL): ${nodes[*]/#/speaker-}"
		;;
	hook)
		# A test build's hook (go build -tags testhooks): SIGUSR1 deafens
		# the speaker's first responder; a release build ignores it.
		for n in "${nodes[@]}"; do
			pid=$(proc_pid "speaker-$n") || die "speaker-$n is not running"
			kill -USR1 "$pid"
		done
		log "sent SIGUSR1: ${nodes[*]/#/speaker-}"
		;;
	*) die "usage: hack/lab.sh speaker start|stop|kill|restart|hook NODE|all" ;;
	esac
}

cmd_cut() {
	local updown=$1 role=${2:-}
	if [[ -z $role || $role == lan ]] || ! is_role "$role"; then
		die "usage: hack/lab.sh cut|uncut NODE (or client, cp)"
	fi
	need_root
	require_up
	ip -n "$(ns_of lan)" link set dev "$role" "$updown"
}

# endpoints SERVICE NS NODE...: one EndpointSlice per IP family of the
# Service, named SERVICE-lab-ipv4/-ipv6, with a ready endpoint (the node's
# IP, nodeName) on each NODE.
cmd_endpoints() {
	local svc=${1:-} nsname=${2:-} fam n name proto target port first addr
	(($# >= 2)) || die "usage: hack/lab.sh endpoints SERVICE NAMESPACE [NODE...]"
	shift 2
	for n in "$@"; do is_node "$n" || die "unknown node '$n' (one of: ${NODES[*]})"; done
	need_root
	require_up
	local families ports
	families=$(kc get svc -n "$nsname" "$svc" -o jsonpath='{.spec.ipFamilies[*]}')
	ports=$(kc get svc -n "$nsname" "$svc" \
		-o jsonpath='{range .spec.ports[*]}{.name}{"|"}{.protocol}{"|"}{.targetPort}{"|"}{.port}{"\n"}{end}')
	{
		first=1
		for fam in $families; do
			((first)) || echo ---
			first=0
			cat <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  namespace: $nsname
  name: $svc-lab-${fam,,}
  labels:
    kubernetes.io/service-name: $svc
    endpointslice.kubernetes.io/managed-by: lab.ironlb.io
addressType: $fam
ports:
EOF
			while IFS='|' read -r name proto target port; do
				[[ -n $port ]] || continue
				[[ $target =~ ^[0-9]+$ ]] || target=$port
				printf -- '- name: "%s"\n  protocol: %s\n  port: %s\n' "$name" "${proto:-TCP}" "$target"
			done <<<"$ports"
			if (($# == 0)); then
				echo "endpoints: []"
				continue
			fi
			echo "endpoints:"
			for n in "$@"; do
				if [[ $fam == IPv6 ]]; then addr=$(ip6 "$n"); else addr=$(ip4 "$n"); fi
				cat <<EOF
- addresses: ["$addr"]
  nodeName: $n
  conditions: {ready: true, serving: true, terminating: false}
EOF
			done
		done
	} | kc apply -f -
}

# apiserver stop|start: stop the control plane's kube-apiserver (its command
# line is kept in .cache/lab/kube-apiserver.cmdline) or start it again with
# that command line, same ports, inside the cp namespace. The PID goes to
# the control plane's own pid file too, so `down` stops it as before.
apiserver_pid() {
	local pid cmdline
	pid=$(state_get pid_kube-apiserver)
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ $cmdline == *"$CP_DIR/"* ]] || return 1
	echo "$pid"
}

cmd_apiserver() {
	local action=${1:-} pid i cmdf=$LAB/kube-apiserver.cmdline pidf=$CP_DIR/kube-apiserver.pid
	need_root
	require_up
	case $action in
	stop)
		pid=$(apiserver_pid) || {
			log "kube-apiserver is not running"
			return 0
		}
		cp "/proc/$pid/cmdline" "$cmdf"
		kill -TERM "$pid"
		for ((i = 0; i < 150; i++)); do
			apiserver_pid >/dev/null || break
			((i == 100)) && kill -KILL "$pid" 2>/dev/null
			sleep 0.1
		done
		! apiserver_pid >/dev/null || die "kube-apiserver (pid $pid) is still running"
		log "kube-apiserver stopped (was pid $pid)"
		;;
	start)
		if pid=$(apiserver_pid); then
			log "kube-apiserver is already running (pid $pid)"
			return 0
		fi
		[[ -s $cmdf ]] || die "no saved kube-apiserver command line (${cmdf#"$ROOT"/}); was it stopped with 'apiserver stop'?"
		local -a args
		mapfile -d '' -t args <"$cmdf"
		rm -f "$pidf"
		printf '==== %s: restarted by hack/lab.sh apiserver start\n' "$(date '+%F %T')" >>"$CP_DIR/kube-apiserver.log"
		# shellcheck disable=SC2016 # $$ and $@ expand in the child shell.
		ip netns exec "$(ns_of cp)" setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" "${args[@]}" \
			>>"$CP_DIR/kube-apiserver.log" 2>&1 </dev/null 7>&- 8>&- 9>&- &
		for ((i = 0; i < 100; i++)); do
			[[ -s $pidf ]] && break
			sleep 0.05
		done
		[[ -s $pidf ]] || die "kube-apiserver did not start"
		state_set pid_kube-apiserver "$(cat "$pidf")"
		wait_for 90 "kube-apiserver (${CP_DIR#"$ROOT"/}/kube-apiserver.log)" apiserver_ready
		log "kube-apiserver running again (pid $(cat "$pidf"))"
		;;
	*) die "usage: hack/lab.sh apiserver stop|start" ;;
	esac
}

apiserver_ready() { [[ $(kc get --raw /readyz 2>/dev/null) == ok ]]; }

KUBECTL=$(bash "$ROOT/hack/control-plane.sh" kubectl-path)

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
exec)
	shift
	cmd_exec "$@"
	;;
speaker)
	shift
	cmd_speaker "$@"
	;;
cut) cmd_cut down "${2:-}" ;;
uncut) cmd_cut up "${2:-}" ;;
apiserver) cmd_apiserver "${2:-}" ;;
endpoints)
	shift
	cmd_endpoints "$@"
	;;
*)
	sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
	exit 2
	;;
esac
