#!/usr/bin/env bash
# A real Kubernetes cluster on one machine, in network namespaces: etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler in a control-plane
# namespace; N nodes each running containerd + runc + CNI, kubelet and
# kube-proxy (iptables mode) in its own network and mount namespace; a client.
# ironlb is installed the way a user installs it: `kubectl apply` of
# manifests/, with its images imported into every node's containerd. Needs root.
#
#   hack/cluster.sh build                  install packages, build Kubernetes (cached) and the images
#   hack/cluster.sh up                     build, then start the cluster (no ironlb yet)
#   hack/cluster.sh down                   stop everything the cluster started and remove it (idempotent)
#   hack/cluster.sh status                 namespaces, links, processes, nodes and pods
#   hack/cluster.sh kubectl ARGS...        kubectl as cluster-admin (runs inside the cp namespace), with
#                                          --request-timeout=15s unless ARGS give another (0: none)
#   hack/cluster.sh exec ROLE CMD...       run CMD in a namespace: lan, cp, client or a node (nodes:
#                                          network and mount namespace, as the node's kubelet sees it)
#   hack/cluster.sh cut NODE / uncut NODE  set the node's bridge-side veth down/up (a pulled cable);
#                                          prints the instant it happened (Unix seconds)
#   hack/cluster.sh apiserver stop|start   stop kube-apiserver / start it again with the same flags
#   hack/cluster.sh import [NODE...]       (re)import bin/images/*.tar into the nodes' containerd
#   hack/cluster.sh state KEY              print a recorded value (suffix, ns_n1, pid_kubelet-n1, ...)
#
# Topology (namespace names carry a per-run suffix, ilb-XXXXXX-ROLE):
#
#   lan     bridge br0 (STP off), one port per other namespace, named after it. No
#           addresses: only the wire.
#   cp      eth0 198.51.100.5: etcd, kube-apiserver (:6443), kube-controller-manager,
#           kube-scheduler. kubectl runs here.
#   n1..nN  eth0 198.51.100.11+i-1; containerd, kubelet, kube-proxy; pods on cni0 in
#           203.0.113.32*(i-1)/27, routed statically between nodes (no overlay).
#   client  eth0 198.51.100.2: a LAN host that ARPs and curls.
#
# Service ClusterIPs: 198.51.100.192/26 (the kubernetes Service is .193). MACs are
# fixed, 02:00:c6:33:64:XX with XX the last IPv4 octet in hex, as in hack/lab.sh.
# Every namespace has an `unreachable default` route: nothing aimed off the LAN
# can leave, and no cluster process runs in the root namespace. Each node has a
# private mount namespace (a slave of the host's) holding kubelet's rshared root,
# containerd's overlay and netns mounts and per-node /run/containerd,
# /var/log/containers and /var/log/pods, so nothing leaks between nodes or to
# the host and everything goes with it. Each node's cgroups live under
# /ironlb-SUFFIX-NODE in every hierarchy. The global sysctls kubelet sets are
# saved before the first kubelet starts and restored by `down`.
#
# Files (git-ignored), under CLUSTER_DIR (default .cache/cluster): state, logs/,
# pki/, kubeconfigs, nodes/NODE/ (containerd root, kubelet root, CNI config).
#
# Environment:
#   CLUSTER_DIR    state directory (default .cache/cluster); one cluster per directory
#   CLUSTER_NODES  number of nodes, 1-8 (default 3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${CLUSTER_DIR:-$ROOT/.cache/cluster}
[[ $DIR == /* ]] || DIR=$PWD/$DIR
STATE=$DIR/state
LOGS=$DIR/logs
PKI=$DIR/pki
IMAGES=$ROOT/bin/images
CP_IP=198.51.100.5
CLIENT_IP=198.51.100.2
SVC_CIDR=198.51.100.192/26
POD_CIDR=203.0.113.0/24
# Kubelet writes these on start; `down` puts the host's values back.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Every cgroup v1 hierarchy on this kind of machine; kubelet needs the node's
# cgroupRoot in each controller it uses, runc uses the named systemd one and
# the cgroup2 `unified` mount too.
CGROUP_V1=(cpu cpuacct cpuset memory devices freezer blkio pids systemd)

log() { printf 'cluster: %s\n' "$*" >&2; }
warn() { printf 'cluster: WARNING: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
need_root() { ((EUID == 0)) || die "the cluster needs root (network and mount namespaces, cgroups)"; }

# ---- state: KEY=VALUE lines ----

state_get() { [[ -f $STATE ]] && sed -n "s/^$1=//p" "$STATE" | tail -n 1; }
state_set() {
	(
		flock 7
		{
			grep -v "^$1=" "$STATE" 2>/dev/null || true
			echo "$1=$2"
		} >"$STATE.tmp"
		mv "$STATE.tmp" "$STATE"
	) 7>"$DIR/.state.lock"
}
state_del() {
	[[ -f $STATE ]] || return 0
	(
		flock 7
		{ grep -v "^$1=" "$STATE" || true; } >"$STATE.tmp"
		mv "$STATE.tmp" "$STATE"
	) 7>"$DIR/.state.lock"
}
require_up() { [[ -f $STATE ]] || die "the cluster is not up (no $STATE); run hack/cluster.sh up"; }

# ---- topology ----

node_count() {
	local n
	n=$(state_get nodes)
	[[ -n $n ]] || n=${CLUSTER_NODES:-3}
	[[ $n =~ ^[1-8]$ ]] || die "CLUSTER_NODES must be 1-8, not '$n'"
	echo "$n"
}
node_names() {
	local i
	for ((i = 1; i <= $(node_count); i++)); do echo "n$i"; done
}
roles() { echo lan cp $(node_names) client; }
is_node() { [[ $1 =~ ^n[1-8]$ ]] && ((${1#n} <= $(node_count))); }
is_role() { [[ " $(roles) " == *" $1 "* ]]; }
ip4() {
	case $1 in
	cp) echo "$CP_IP" ;;
	client) echo "$CLIENT_IP" ;;
	n[1-8]) echo "198.51.100.$((10 + ${1#n}))" ;;
	*) return 1 ;;
	esac
}
mac() {
	local ip
	ip=$(ip4 "$1")
	printf '02:00:c6:33:64:%02x\n' "${ip##*.}"
}
pod_cidr() { echo "203.0.113.$((32 * (${1#n} - 1)))/27"; }
pod_gw() { echo "203.0.113.$((32 * (${1#n} - 1) + 1))"; }
ns_of() {
	local ns
	ns=$(state_get "ns_$1")
	[[ -n $ns ]] || die "no namespace recorded for '$1'"
	echo "$ns"
}
node_dir() { echo "$DIR/nodes/$1"; }
# Sockets and runtime state live on /run, with short paths (unix socket
# paths are limited to 107 bytes).
run_dir() { echo "/run/ilb-$(state_get suffix)"; }
mnt_ns() { echo "$(run_dir)/mnt/$1"; }
cgroup_root() { echo "/ironlb-$(state_get suffix)-$1"; }

# in_role ROLE CMD...: run CMD in ROLE's namespaces (for a node, its network
# and mount namespace).
in_role() {
	local role=$1
	shift
	if is_node "$role"; then
		nsenter --net="/run/netns/$(ns_of "$role")" --mount="$(mnt_ns "$role")" -- "$@"
	else
		nsenter --net="/run/netns/$(ns_of "$role")" -- "$@"
	fi
}

# Where hack/control-plane.sh builds the Kubernetes binaries.
K8S_BIN=$ROOT/.cache/k8s-v$(awk '$1 == "k8s.io/client-go" { sub(/^v0\./, "1.", $2); print $2; exit }' "$ROOT/go.mod")/bin
KUBECTL=$K8S_BIN/kubectl
kc() { in_role cp "$KUBECTL" --kubeconfig "$DIR/admin.kubeconfig" --request-timeout=15s "$@"; }

# ---- processes ----

# proc_pid NAME: the recorded PID if that process is alive and still ours (its
# command line names DIR or the run dir; guards against PID reuse).
proc_pid() {
	local pid cmdline
	pid=$(state_get "pid_$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ $cmdline == *"$DIR/"* || $cmdline == *"$(run_dir)/"* ]] || return 1
	echo "$pid"
}

# start_proc NAME ROLE CMD...: run CMD detached in its own session inside
# ROLE's namespaces, log appended to logs/NAME.log, PID recorded.
start_proc() {
	local name=$1 role=$2 pidfile log i
	shift 2
	pidfile=$(run_dir)/$name.pid
	log=$LOGS/$name.log
	rm -f "$pidfile"
	printf '==== %s: %s\n' "$(date '+%F %T')" "$*" >>"$log"
	# shellcheck disable=SC2016 # $$ and $@ expand in the child shell.
	in_role "$role" setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" \
		>>"$log" 2>&1 </dev/null 7>&- 8>&- 9>&- &
	for ((i = 0; i < 100; i++)); do
		[[ -s $pidfile ]] && break
		sleep 0.05
	done
	[[ -s $pidfile ]] || die "$name did not start (see $log)"
	state_set "pid_$name" "$(cat "$pidfile")"
	state_set "cmd_$name" "$role"
	rm -f "$pidfile"
}

# stop_procs NAME...: SIGTERM every live one, SIGKILL what is left after
# WAIT seconds (default 5), wait until all are gone.
stop_procs() {
	local name pid i left wait=${WAIT:-5}
	local -a names=()
	for name in "$@"; do
		if pid=$(proc_pid "$name"); then
			kill -TERM "$pid" 2>/dev/null || true
			names+=("$name")
		else
			state_del "pid_$name"
		fi
	done
	((${#names[@]})) || return 0
	for ((i = 0; i < 10 * wait + 50; i++)); do
		left=0
		for name in "${names[@]}"; do
			proc_pid "$name" >/dev/null && left=1
		done
		((left)) || break
		if ((i == 10 * wait)); then
			for name in "${names[@]}"; do
				pid=$(proc_pid "$name") || continue
				warn "$name (pid $pid) ignored SIGTERM for $wait s; sending SIGKILL"
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

# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds.
wait_for() {
	local secs=$1 deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$what not ready after $secs s"
		sleep 0.25
	done
}

# ---- build ----

apt_install() {
	local -a missing=()
	local pkg
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	log "installing ${missing[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
		apt-get update -q -o DPkg::Lock::Timeout=300 >&2
	fi
	if ! apt-get install -y -q -o DPkg::Lock::Timeout=300 "${missing[@]}" >&2; then
		apt-get update -q -o DPkg::Lock::Timeout=300 >&2
		apt-get install -y -q -o DPkg::Lock::Timeout=300 "${missing[@]}" >&2
	fi
}

cmd_build() {
	apt_install containerd runc containernetworking-plugins iptables conntrack iproute2 openssl curl util-linux
	# apt starts nothing here, but a host containerd would not be ours.
	bash "$ROOT/hack/control-plane.sh" build 9>&-
	log "building the images (controller, speaker, pause, backend) into ${IMAGES#"$ROOT"/}"
	bash "$ROOT/hack/images.sh" >&2
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
	local suffix=$1 role ns lan n m
	for role in $(roles); do
		state_set "ns_$role" "ilb-$suffix-$role"
	done
	for role in $(roles); do
		ns=ilb-$suffix-$role
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		# IPv4 only: the process lab covers NDP.
		nsysctl "$ns" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
		if is_node "$role"; then
			# Routing pods and kube-proxy's DNAT; the kernel never answers
			# ARP for an address that is not on the asking interface (no
			# VIP ever is: kube-proxy's iptables mode assigns none).
			nsysctl "$ns" net.ipv4.ip_forward=1 net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
		fi
	done
	lan=ilb-$suffix-lan
	ip -n "$lan" link add br0 type bridge stp_state 0 mcast_snooping 0
	ip -n "$lan" link set br0 up
	for role in $(roles); do
		[[ $role == lan ]] && continue
		ns=ilb-$suffix-$role
		# Created inside lan, the peer born straight in its namespace:
		# nothing ever appears in the root namespace.
		ip -n "$lan" link add "$role" type veth peer name eth0 netns "$ns" address "$(mac "$role")"
		ip -n "$lan" link set "$role" master br0
		ip -n "$lan" link set "$role" up
		ip -n "$ns" addr add "$(ip4 "$role")/24" dev eth0
		ip -n "$ns" link set eth0 up
		ip -n "$ns" route add unreachable default
	done
	ip -n "$lan" route add unreachable default
	# Pod networks: static routes to every node's block, from the other
	# nodes and the control plane (the apiserver reaches webhooks and pods;
	# replies from pods to it come back the same way).
	for n in $(node_names); do
		for m in cp $(node_names); do
			[[ $m == "$n" ]] && continue
			ip -n "ilb-$suffix-$m" route add "$(pod_cidr "$n")" via "$(ip4 "$n")"
		done
	done
}

# ---- PKI and kubeconfigs ----

make_pki() {
	local name
	mkdir -p "$PKI"
	(
		umask 077
		cd "$PKI"
		openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt \
			-subj "/CN=ironlb-lab-ca" 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
			-subj "/CN=kube-apiserver" 2>/dev/null
		cat >apiserver.ext <<EOF
subjectAltName=IP:$CP_IP,IP:198.51.100.193,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
keyUsage=digitalSignature,keyEncipherment
EOF
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
			-extfile apiserver.ext -out apiserver.crt 2>/dev/null
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
		# One bearer token per identity; the default RBAC bindings (and the
		# Node authorizer for system:node:*) give each what it needs.
		: >tokens.csv
		for name in "admin|admin|system:masters" "kube-controller-manager|system:kube-controller-manager|" \
			"kube-scheduler|system:kube-scheduler|" "kube-proxy|system:kube-proxy|" \
			$(for n in $(node_names); do echo "kubelet-$n|system:node:$n|system:nodes"; done); do
			local file user group token
			IFS='|' read -r file user group <<<"$name"
			token=$(openssl rand -hex 24)
			if [[ -n $group ]]; then
				echo "$token,$user,$user,\"$group\"" >>tokens.csv
			else
				echo "$token,$user,$user" >>tokens.csv
			fi
			echo "$token" >"token-$file"
		done
	)
	for name in admin kube-controller-manager kube-scheduler kube-proxy $(node_names | sed 's/^/kubelet-/'); do
		write_kubeconfig "$DIR/$name.kubeconfig" "$(cat "$PKI/token-$name")"
	done
}

write_kubeconfig() {
	(
		umask 077
		cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ironlb-lab
  cluster:
    server: https://$CP_IP:6443
    certificate-authority: $PKI/ca.crt
users:
- name: user
  user:
    token: $2
contexts:
- name: ironlb-lab
  context:
    cluster: ironlb-lab
    user: user
current-context: ironlb-lab
EOF
	)
}

# ---- control plane ----

start_control_plane() {
	local cp=$DIR/cp
	mkdir -p "$cp"
	start_proc etcd cp etcd --name ironlb --data-dir "$cp/etcd" --logger zap \
		--listen-client-urls "http://127.0.0.1:2379" --advertise-client-urls "http://127.0.0.1:2379" \
		--listen-peer-urls "http://127.0.0.1:2380" --initial-advertise-peer-urls "http://127.0.0.1:2380" \
		--initial-cluster "ironlb=http://127.0.0.1:2380"
	start_proc kube-apiserver cp "$K8S_BIN/kube-apiserver" \
		--etcd-servers=http://127.0.0.1:2379 \
		--bind-address="$CP_IP" --advertise-address="$CP_IP" --secure-port=6443 \
		--tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
		--client-ca-file="$PKI/ca.crt" \
		--token-auth-file="$PKI/tokens.csv" \
		--authorization-mode=Node,RBAC \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file="$PKI/sa.pub" \
		--service-account-signing-key-file="$PKI/sa.key" \
		--service-cluster-ip-range="$SVC_CIDR" \
		--kubelet-preferred-address-types=InternalIP \
		--profiling=false
	wait_for 90 "kube-apiserver ($LOGS/kube-apiserver.log)" apiserver_ready
	start_proc kube-controller-manager cp "$K8S_BIN/kube-controller-manager" \
		--kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
		--authentication-kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
		--authorization-kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
		--bind-address="$CP_IP" --secure-port=10257 \
		--leader-elect=false --use-service-account-credentials=true \
		--service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
		--service-cluster-ip-range="$SVC_CIDR" --cluster-cidr="$POD_CIDR" \
		--profiling=false
	start_proc kube-scheduler cp "$K8S_BIN/kube-scheduler" \
		--kubeconfig="$DIR/kube-scheduler.kubeconfig" \
		--authentication-kubeconfig="$DIR/kube-scheduler.kubeconfig" \
		--authorization-kubeconfig="$DIR/kube-scheduler.kubeconfig" \
		--bind-address="$CP_IP" --secure-port=10259 --leader-elect=false --profiling=false
}

apiserver_ready() { [[ $(kc get --raw /readyz 2>/dev/null) == ok ]]; }

# ---- nodes ----

save_sysctls() {
	[[ -n $(state_get sysctls_saved) ]] && return 0
	local s
	for s in "${KUBELET_SYSCTLS[@]}"; do
		state_set "sysctl_$s" "$(sysctl -n "$s")"
	done
	state_set sysctls_saved 1
}

restore_sysctls() {
	local s v
	[[ -n $(state_get sysctls_saved) ]] || return 0
	for s in "${KUBELET_SYSCTLS[@]}"; do
		v=$(state_get "sysctl_$s")
		[[ -n $v ]] && sysctl -q -w "$s=$v" >/dev/null
	done
	state_del sysctls_saved
}

make_cgroups() {
	local node=$1 cg h
	cg=$(cgroup_root "$node")
	for h in "${CGROUP_V1[@]}"; do
		[[ -d /sys/fs/cgroup/$h ]] || continue
		mkdir -p "/sys/fs/cgroup/$h$cg"
	done
	# A new cpuset has no CPUs or memory nodes until given some.
	cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset$cg/cpuset.cpus"
	cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset$cg/cpuset.mems"
}

# The node's private mount namespace: a file on a private bind mount keeps
# it alive without a process, so node processes can be restarted one by one.
make_mount_ns() {
	local node=$1 mnt d
	mnt=$(mnt_ns "$node")
	d=$(node_dir "$node")
	if ! mountpoint -q "$(run_dir)/mnt"; then
		mkdir -p "$(run_dir)/mnt"
		mount --bind "$(run_dir)/mnt" "$(run_dir)/mnt"
		mount --make-private "$(run_dir)/mnt"
	fi
	touch "$mnt"
	unshare --mount="$mnt" --propagation slave true
	mkdir -p "$d/kubelet" "$d/run-containerd" "$d/log-containers" "$d/log-pods"
	# kubelet's root must be rshared so that volume mounts reach containers;
	# /run/containerd and /var/log/containers are hard-coded paths that
	# every node would otherwise share.
	mkdir -p /run/containerd /var/log/containers
	nsenter --mount="$mnt" -- sh -ec "
		mount --bind '$d/kubelet' '$d/kubelet'
		mount --make-rshared '$d/kubelet'
		mount --bind '$d/run-containerd' /run/containerd
		mount --bind '$d/log-containers' /var/log/containers
	"
}

write_node_config() {
	local node=$1 d sock
	d=$(node_dir "$node")
	sock=$(run_dir)/$node/containerd.sock
	mkdir -p "$d/cni/net.d" "$d/cni/ipam" "$(run_dir)/$node"
	cat >"$d/containerd.toml" <<EOF
version = 2
root = "$d/containerd"
state = "$(run_dir)/$node/containerd-state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$(run_dir)/$node/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd-opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/ironlb/pause:v0.1.0"
  disable_apparmor = true
  # Root lacks CAP_SYS_RESOURCE here; without this every sandbox fails.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$(run_dir)/$node/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni/net.d"
EOF
	cat >"$d/cni/net.d/10-ironlb-lab.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ironlb-lab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "hairpinMode": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$d/cni/ipam",
        "ranges": [[{"subnet": "$(pod_cidr "$node")", "gateway": "$(pod_gw "$node")"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
	cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 only.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $(cgroup_root "$node")
containerRuntimeEndpoint: unix://$sock
address: $(ip4 "$node")
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
# The host's resolver is not for pods; no cluster DNS runs in the lab, but
# naming one keeps kubelet from warning on every ClusterFirst pod.
resolvConf: ""
clusterDomain: cluster.local
clusterDNS: [198.51.100.250]
podLogsDir: $d/log-pods
# Images are imported, never pulled: keep them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
failSwapOn: false
serializeImagePulls: false
EOF
	cat >"$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $node
bindAddress: $(ip4 "$node")
healthzBindAddress: $(ip4 "$node"):10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $POD_CIDR
nodePortAddresses: ["198.51.100.0/24"]
clientConnection:
  kubeconfig: $DIR/kube-proxy.kubeconfig
# nf_conntrack_max is global and not writable from a namespace.
conntrack:
  maxPerCore: 0
  min: 0
EOF
}

containerd_sock() { echo "$(run_dir)/$1/containerd.sock"; }

containerd_ready() { in_role "$1" ctr -a "$(containerd_sock "$1")" version; }

start_node() {
	local node=$1 d
	d=$(node_dir "$node")
	make_cgroups "$node"
	make_mount_ns "$node"
	write_node_config "$node"
	start_proc "containerd-$node" "$node" containerd --config "$d/containerd.toml"
	wait_for 30 "containerd on $node ($LOGS/containerd-$node.log)" containerd_ready "$node"
	import_images "$node"
	start_proc "kubelet-$node" "$node" "$K8S_BIN/kubelet" --config "$d/kubelet.yaml" \
		--kubeconfig "$DIR/kubelet-$node.kubeconfig" --root-dir "$d/kubelet" \
		--hostname-override "$node" --node-ip "$(ip4 "$node")" \
		--node-labels "ironlb.io/lab-node=$node"
	start_proc "kube-proxy-$node" "$node" "$K8S_BIN/kube-proxy" --config "$d/kube-proxy.yaml"
}

import_images() {
	local node=$1 f
	for f in "$IMAGES"/*.tar; do
		[[ -f $f ]] || die "no images in ${IMAGES#"$ROOT"/}; run hack/cluster.sh build"
		in_role "$node" ctr -a "$(containerd_sock "$node")" -n k8s.io images import "$f" >/dev/null ||
			die "importing $f into $node failed"
	done
}

node_ready() {
	[[ $(kc get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

on_up_exit() {
	local rc=$?
	((rc == 0)) && return 0
	log "up failed (exit $rc); logs are in $LOGS; removing everything it made"
	do_down || true
	exit "$rc"
}

cmd_up() {
	local t0 suffix n
	need_root
	t0=$EPOCHREALTIME
	mkdir -p "$DIR"
	exec 9>"$DIR/.cluster.lock"
	flock -n 9 || die "another hack/cluster.sh up/down is running on $DIR"
	[[ ! -e $STATE ]] || die "a cluster is already up in $DIR ($(state_get suffix)); run hack/cluster.sh down first"
	cmd_build
	local tb=$EPOCHREALTIME

	rm -rf "$LOGS" "$PKI" "$DIR/nodes" "$DIR/cp" "$DIR"/*.kubeconfig
	mkdir -p "$LOGS"
	trap on_up_exit EXIT
	trap 'exit 130' INT TERM HUP
	suffix=$(random_suffix)
	state_set suffix "$suffix"
	state_set nodes "${CLUSTER_NODES:-3}"
	node_count >/dev/null
	state_set created "$(date '+%F %T')"
	mkdir -p "$(run_dir)"
	make_network "$suffix"
	log "network up: ilb-$suffix-{$(roles | tr ' ' ',')}"
	make_pki
	start_control_plane
	log "control plane ready"
	save_sysctls
	for n in $(node_names); do
		start_node "$n"
	done
	for n in $(node_names); do
		wait_for 90 "node $n ($LOGS/kubelet-$n.log)" node_ready "$n"
	done
	trap - EXIT INT TERM HUP
	log "up in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s" \
		"(builds $(awk -v a="$t0" -v b="$tb" 'BEGIN { printf "%.1f", b - a }') s): $(node_count) nodes Ready"
}

# ---- down ----

# Pod processes of a node: every PID in its cgroups.
cgroup_pids() {
	local cg=$1 h
	for h in pids memory; do
		[[ -d /sys/fs/cgroup/$h$cg ]] || continue
		find "/sys/fs/cgroup/$h$cg" -name cgroup.procs -exec cat {} + 2>/dev/null
	done | sort -u
}

# Processes in a mount namespace (containerd's shims outlive containerd).
mnt_pids() {
	local ino=$1 p
	for p in /proc/[0-9]*; do
		[[ $(stat -L -c %i "$p/ns/mnt" 2>/dev/null) == "$ino" ]] && echo "${p#/proc/}"
	done
	return 0
}

kill_all() {
	local pids i
	for ((i = 0; i < 50; i++)); do
		pids=$("$@" || true)
		[[ -n $pids ]] || return 0
		# shellcheck disable=SC2086 # one PID per word.
		kill -KILL $pids 2>/dev/null || true
		sleep 0.1
	done
	warn "processes still alive: $("$@" | tr '\n' ' ')"
}

remove_cgroups() {
	local cg=$1 h
	for h in "${CGROUP_V1[@]}" unified; do
		[[ -d /sys/fs/cgroup/$h$cg ]] || continue
		find "/sys/fs/cgroup/$h$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[[ -d /sys/fs/cgroup/$h$cg ]] && warn "could not remove cgroup /sys/fs/cgroup/$h$cg"
	done
	return 0
}

do_down() {
	local role ns pid pids n mnt ino
	[[ -f $STATE ]] || {
		log "the cluster is not up; nothing to do"
		return 0
	}
	local -a nodes
	read -r -a nodes <<<"$(node_names | tr '\n' ' ')"
	# Node agents first, so nothing restarts pods while they are killed.
	WAIT=5 stop_procs "${nodes[@]/#/kube-proxy-}" "${nodes[@]/#/kubelet-}"
	for n in "${nodes[@]}"; do
		kill_all cgroup_pids "$(cgroup_root "$n")"
	done
	WAIT=5 stop_procs "${nodes[@]/#/containerd-}"
	for n in "${nodes[@]}"; do
		mnt=$(mnt_ns "$n")
		if [[ -e $mnt ]] && ino=$(stat -L -c %i "$mnt" 2>/dev/null) && [[ -n $ino ]] &&
			nsenter --mount="$mnt" true 2>/dev/null; then
			ino=$(nsenter --mount="$mnt" -- stat -L -c %i /proc/self/ns/mnt)
			kill_all mnt_pids "$ino"
		fi
		kill_all cgroup_pids "$(cgroup_root "$n")"
	done
	# kube-apiserver may ignore SIGTERM for long with open watches.
	WAIT=3 stop_procs kube-scheduler kube-controller-manager kube-apiserver etcd
	for n in "${nodes[@]}"; do
		mnt=$(mnt_ns "$n")
		if mountpoint -q "$mnt" 2>/dev/null || [[ -e $mnt ]]; then
			umount "$mnt" 2>/dev/null || true
		fi
		remove_cgroups "$(cgroup_root "$n")"
	done
	if [[ -n $(state_get suffix) ]]; then
		umount "$(run_dir)/mnt" 2>/dev/null || true
		rm -rf "$(run_dir)"
	fi
	for role in $(roles); do
		ns=$(state_get "ns_$role")
		[[ -n $ns && -e /run/netns/$ns ]] || continue
		# Anything still in a cluster namespace was started in it by us
		# (say, hack/cluster.sh exec): stop it by PID so the namespace goes.
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		if [[ -n $pids ]]; then
			warn "stopping processes left in $ns: $(echo "$pids" | tr '\n' ' ')"
			for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
			sleep 0.3
		fi
		ip netns del "$ns"
	done
	restore_sysctls
	rm -rf "$DIR/nodes" "$DIR/cp" "$PKI" "$DIR"/*.kubeconfig "$DIR/apiserver.cmdline"
	rm -f "$STATE" "$STATE.tmp"
	log "down"
}

cmd_down() {
	need_root
	[[ -d $DIR ]] || {
		log "the cluster is not up; nothing to do"
		return 0
	}
	exec 9>"$DIR/.cluster.lock"
	flock 9
	do_down
}

# ---- the rest ----

cmd_status() {
	local role ns name state pid
	require_up
	echo "cluster ilb-$(state_get suffix)-*, up since $(state_get created)"
	for role in $(roles); do
		ns=$(state_get "ns_$role")
		if [[ ! -e /run/netns/$ns ]]; then
			printf '  %-7s %-20s MISSING\n' "$role" "$ns"
			continue
		fi
		[[ $role == lan ]] && continue
		state=$(ip -n "$(state_get ns_lan)" -br link show dev "$role" 2>/dev/null | awk '{ print $2 }')
		printf '  %-7s %-20s %-6s %-18s %s\n' "$role" "$ns" "${state:-?}" "$(mac "$role")" "$(ip4 "$role")"
	done
	echo "processes:"
	while read -r name; do
		if pid=$(proc_pid "$name"); then
			printf '  %-26s pid %-8s running\n' "$name" "$pid"
		else
			printf '  %-26s pid %-8s NOT RUNNING\n' "$name" "$(state_get "pid_$name")"
		fi
	done < <(sed -n 's/^pid_\([^=]*\)=.*/\1/p' "$STATE")
	kc get nodes -o wide 2>&1 | sed 's/^/  /' || true
	kc get pods -A -o wide 2>&1 | sed 's/^/  /' || true
}

cmd_cut() {
	local updown=$1 role=${2:-}
	require_up
	if [[ -z $role || $role == lan ]] || ! is_role "$role"; then
		die "usage: hack/cluster.sh cut|uncut NODE (or client, cp)"
	fi
	need_root
	ip -n "$(ns_of lan)" link set dev "$role" "$updown"
	# When it happened, for whoever measures from it: this script takes a
	# while to start.
	echo "$EPOCHREALTIME"
}

cmd_apiserver() {
	local action=${1:-} pid args
	need_root
	require_up
	case $action in
	stop)
		pid=$(proc_pid kube-apiserver) || {
			log "kube-apiserver is not running"
			return 0
		}
		cp "/proc/$pid/cmdline" "$DIR/apiserver.cmdline"
		WAIT=3 stop_procs kube-apiserver
		log "kube-apiserver stopped (was pid $pid)"
		;;
	start)
		if pid=$(proc_pid kube-apiserver); then
			log "kube-apiserver is already running (pid $pid)"
			return 0
		fi
		[[ -s $DIR/apiserver.cmdline ]] || die "no saved kube-apiserver command line; was it stopped with 'apiserver stop'?"
		local -a args
		mapfile -d '' -t args <"$DIR/apiserver.cmdline"
		start_proc kube-apiserver cp "${args[@]}"
		wait_for 90 "kube-apiserver ($LOGS/kube-apiserver.log)" apiserver_ready
		log "kube-apiserver running again (pid $(proc_pid kube-apiserver))"
		;;
	*) die "usage: hack/cluster.sh apiserver stop|start" ;;
	esac
}

cmd_import() {
	local n
	need_root
	require_up
	(($#)) || set -- $(node_names)
	for n in "$@"; do
		is_node "$n" || die "unknown node '$n'"
		import_images "$n"
	done
	log "imported $(ls "$IMAGES"/*.tar | xargs -n1 basename | tr '\n' ' ')into $*"
}

# The whole command runs from a function that bash has read in full, so
# editing this file while a cluster command runs cannot change it midway.
main() {
	case ${1:-} in
	build)
		need_root
		cmd_build
		;;
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	kubectl)
		shift
		require_up
		# kc's 15 s request timeout keeps a client from hanging on a stopped
		# API server; a --request-timeout in ARGS comes later and wins
		# (0 for rollout status, drain and watches).
		kc "$@"
		;;
	exec)
		shift
		(($# >= 2)) || die "usage: hack/cluster.sh exec ROLE CMD..."
		require_up
		is_role "$1" || die "unknown namespace '$1' (one of: $(roles))"
		local role=$1
		shift
		in_role "$role" "$@"
		;;
	cut) cmd_cut down "${2:-}" ;;
	uncut) cmd_cut up "${2:-}" ;;
	apiserver) cmd_apiserver "${2:-}" ;;
	import)
		shift
		cmd_import "$@"
		;;
	state)
		require_up
		state_get "${2:?usage: hack/cluster.sh state KEY}"
		;;
	*)
		sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
		exit 2
		;;
	esac
}

main "$@"
exit
