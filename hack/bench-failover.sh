#!/usr/bin/env bash
# Failover benchmark in the network lab (hack/lab.sh). Needs root.
#
#   hack/bench-failover.sh [--use-running] [--trials N] [--steady SECONDS] [--vips N] [--skip-rss]
#
# Brings a fresh lab up (and takes it down on every exit path), or with
# --use-running uses the lab that is up (and only undoes what it did itself).
# Creates the walkthrough Service (ingress-nginx/ingress-nginx-controller,
# TCP 80 and 443) and measures, from the client namespace with
# hack/lab/probe (a fresh TCP connection every 20 ms, 100 ms timeout; ARP
# every 20 ms):
#
#   failover node p50=… max=…         ms from cutting the owner's link to the
#                                     client's next successful request (the
#                                     owner is looked up again each trial)
#   failback switches_max=… settle_max=… failed_max=… client_moves_max=…
#                                     after uncut: most node changes the client
#                                     saw in one trial; ms from uncut until it
#                                     stayed on the final owner; most failed
#                                     requests in one trial, counting every
#                                     request after the uncut; most changes of
#                                     the client's neighbour entry for the VIP
#                                     in one trial (hack/lab/probe neigh)
#   failover kill failed=… handoff_p50=…
#   failover term failed=… handoff_p50=…
#                                     SIGKILL / SIGTERM to the owner's speaker:
#                                     failed client requests over all trials;
#                                     ms from the signal until another node
#                                     answers ARP for the VIP
#   steady distinct_macs=… arp_p99_us=…
#                                     ARP every 20 ms for --steady seconds
#   rss vips=… speaker_rss_max_mb=…   VmRSS of the speakers with --vips VIPs
#
# Targets (docs: DESIGN.md): node p50 <= 1000, max <= 2000; kill/term failed
# = 0; term handoff p50 <= 300; failback switches_max 1, settle_max <= 2000,
# failed_max 0; distinct MACs 1; ARP p99 <= 1 ms; RSS <= 50 MB with 1,000
# VIPs.
#
# Raw probe output stays in the directory printed at the start.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USE_RUNNING=0
TRIALS=10
STEADY=60
VIPS=1000
SKIP_RSS=0
while (($#)); do
	case $1 in
	--use-running) USE_RUNNING=1 ;;
	--trials) TRIALS=$2 && shift ;;
	--steady) STEADY=$2 && shift ;;
	--vips) VIPS=$2 && shift ;;
	--skip-rss) SKIP_RSS=1 ;;
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
((EUID == 0)) || die "needs root (network namespaces)"
command -v jq >/dev/null || die "needs jq"
command -v python3 >/dev/null || die "needs python3"

STATE=$ROOT/.cache/lab/state
WORK=$(mktemp -d /tmp/ironlb-bench-failover.XXXXXX)
NS=ingress-nginx
SVC=ingress-nginx-controller
RSS_NS=bench-rss-$$
declare -A MAC=([n1]=02:00:c6:33:64:0b [n2]=02:00:c6:33:64:0c [n3]=02:00:c6:33:64:0d)
declare -A NODE_OF=([02:00:c6:33:64:0b]=n1 [02:00:c6:33:64:0c]=n2 [02:00:c6:33:64:0d]=n3)

lab() { LAB_SPEAKER_BIN=$WORK/speaker bash "$ROOT/hack/lab.sh" "$@"; }
kc() { bash "$ROOT/hack/kubectl" --request-timeout=30s "$@"; }
probe() { bash "$ROOT/hack/lab.sh" exec client "$WORK/probe" "$@"; }
now_ms() { awk -v t="$EPOCHREALTIME" 'BEGIN { printf "%.3f", t * 1000 }'; }

# ---- setup and cleanup ----

CUT=""
KILLED=""
BG=()
CREATED_SVC=0
RSS_CM=""
cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM HUP
	for pid in "${BG[@]}"; do kill "$pid" 2>/dev/null || true; done
	if ((USE_RUNNING)); then
		[[ -z $CUT ]] || lab uncut "$CUT" || true
		[[ -z $KILLED ]] || lab speaker start "$KILLED" || true
		if [[ -n $RSS_CM ]]; then
			kc -n "$RSS_NS" delete svc --all --wait=false >/dev/null 2>&1 || true
			kc apply -f "$RSS_CM" >/dev/null 2>&1 || true
		fi
		((CREATED_SVC == 0)) || kc -n "$NS" delete svc "$SVC" --wait=false >/dev/null 2>&1 || true
	elif [[ -f $STATE ]] && grep -qx "suffix=$SUFFIX" "$STATE"; then
		bash "$ROOT/hack/lab.sh" down || true
	fi
	log "raw data kept in $WORK"
	exit "$rc"
}

SUFFIX=""
if ((USE_RUNNING)); then
	[[ -f $STATE ]] || die "--use-running: no lab is up"
else
	[[ ! -f $STATE ]] || die "a lab is already up; take it down first or pass --use-running"
fi
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

log "building the probe; raw data in $WORK"
(cd "$ROOT" && go build -o "$WORK/probe" ./hack/lab/probe)
if ((!USE_RUNNING)); then
	bash "$ROOT/hack/lab.sh" up
fi
SUFFIX=$(sed -n 's/^suffix=//p' "$STATE" | tail -n 1)
# Restarts use this copy, never a rebuild of a tree others are editing.
cp "$ROOT/.cache/lab/bin/speaker" "$WORK/speaker"

if ! kc get namespace "$NS" >/dev/null 2>&1; then kc create namespace "$NS" >/dev/null; fi
if ! kc -n "$NS" get svc "$SVC" >/dev/null 2>&1; then
	kc -n "$NS" create service loadbalancer "$SVC" --tcp=80:80 --tcp=443:443 >/dev/null
	CREATED_SVC=1
fi
VIP=""
for ((i = 0; i < 150; i++)); do
	VIP=$(kc -n "$NS" get svc "$SVC" -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
	[[ -n $VIP ]] && break
	sleep 0.2
done
[[ -n $VIP ]] || die "$NS/$SVC got no address"
URL=http://$VIP/health
log "VIP $VIP"

# owner: the node whose MAC alone answers ARP for the VIP (waits up to 20 s).
owner() {
	local i macs
	for ((i = 0; i < 100; i++)); do
		macs=$(probe arp --ip "$VIP" --wait 100ms | jq -r '.macs | join(" ")')
		if [[ -n $macs && $macs != *" "* ]]; then
			echo "${NODE_OF[$macs]}"
			return 0
		fi
		[[ $macs == *" "* ]] && log "two MACs answer for $VIP: $macs"
		sleep 0.2
	done
	die "no single owner for $VIP after 20 s"
}

# bg_probe OUT STOPFILE ARGS...: run the probe in the background.
bg_probe() {
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

# await_ok FILE SINCE_MS NOT_NODE: until a request started after SINCE from
# another node succeeded (20 s at most).
await_ok() {
	local i
	for ((i = 0; i < 200; i++)); do
		if jq -e --argjson s "$2" --arg n "$3" 'select(.ok and .unix_ms >= $s and .node != $n)' "$1" 2>/dev/null | grep -q .; then
			return 0
		fi
		sleep 0.1
	done
	log "no successful request from another node 20 s after the cut"
	return 1
}

# ---- node cut + failback ----

node_trial() {
	local i=$1 o out stop tcut tun
	o=$(owner)
	out=$WORK/node-$i.jsonl
	stop=$WORK/stop
	bg_probe "$out" "$stop" http --url "$URL" --interval 20ms --timeout 100ms
	bg_probe "$WORK/node-$i-arp.jsonl" "$stop" arp --ip "$VIP" --watch --interval 20ms --duration 0
	bg_probe "$WORK/node-$i-neigh.jsonl" "$stop" neigh --ip "$VIP" --duration 0
	sleep 1
	tcut=$(now_ms)
	lab cut "$o"
	CUT=$o
	await_ok "$out" "$tcut" "$o" || true
	sleep 1
	tun=$(now_ms)
	lab uncut "$o"
	CUT=""
	sleep 6
	stop_bg "$stop"
	python3 - "$out" "$o" "$tcut" "$tun" "$WORK/node-$i-arp.jsonl" "$WORK/node-$i-neigh.jsonl" <<'EOF' | tee -a "$WORK/node.results"
import json, sys
path, old, tcut, tun, arp, neigh = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
nodes = {"02:00:c6:33:64:0b": "n1", "02:00:c6:33:64:0c": "n2", "02:00:c6:33:64:0d": "n3"}
rounds = [json.loads(l) for l in open(arp) if l.strip()]
rounds = [r for r in rounds if not r.get("summary") and r["unix_ms"] >= tun]
two = [r for r in rounds if len(r["macs"]) > 1]
# Who answered or announced, in order. The replies of a round answer one
# question: the MAC seen last before the round goes first among them (two
# nodes answering one question is a handover under way, not a move back),
# the others by reply time; then the round's announcements.
seq, last = [], None
for r in rounds:
    replies = sorted(r["macs"], key=lambda m: (m != last, r["lat_us"].get(m, 0)))
    for m in replies + r["grat"]:
        last = m
        n = nodes.get(m, m)
        if not seq or seq[-1] != n:
            seq.append(n)
# The client's own neighbour entry: every change of MAC after the uncut
# (a move back shows here as a second move).
entry, moves, cur = [], [], None
for l in open(neigh):
    e = json.loads(l) if l.strip() else {}
    if not e.get("mac"):
        continue
    if e["unix_ms"] >= tun:
        if not entry:
            entry.append(nodes.get(cur, cur or "?"))
        if e["mac"] != cur:
            moves.append(e["unix_ms"])
            entry.append(nodes.get(e["mac"], e["mac"]))
    cur = e["mac"]
if not entry:
    entry.append(nodes.get(cur, cur or "?"))
rs = sorted((json.loads(l) for l in open(path) if l.strip()), key=lambda r: r["t_ms"])
cut = [r for r in rs if tcut <= r["unix_ms"] < tun]
back = [r for r in cut if r["ok"] and r["node"] != old]
fo = back[0]["unix_ms"] + back[0]["lat_ms"] - tcut if back else -1
failed_cut = sum(1 for r in cut if not r["ok"])
new = back[0]["node"] if back else "?"
prev, switches, settle, failed_back, final = new, 0, 0.0, 0, new
# A failed request is in flight at a move when the client's entry changed
# while it ran: its TCP connection went on to the other node mid-stream.
inflight = 0
for r in rs:
    if r["unix_ms"] < tun:
        continue
    if not r["ok"]:
        failed_back += 1
        if any(r["unix_ms"] <= m <= r["unix_ms"] + r["lat_ms"] for m in moves):
            inflight += 1
        continue
    if r["node"] != prev:
        switches += 1
        settle = r["unix_ms"] + r["lat_ms"] - tun
        prev = r["node"]
    final = r["node"]
print(f"failover_ms={fo:.0f} failed_cut={failed_cut} cut={old} new={new} "
      f"switches={switches} settle_ms={settle:.0f} failed_back={failed_back} failed_inflight={inflight} final={final} "
      f"client_moves={len(moves)} client_entry={'>'.join(entry)} "
      f"arp_two_macs={len(two)} arp_after_uncut={'>'.join(seq)}"
      + "".join(f" two@+{r['unix_ms'] - tun:.0f}ms:{','.join(nodes.get(m, m) for m in r['macs'])}" for r in two[:3]))
EOF
	sleep 1
}

# ---- speaker SIGKILL / SIGTERM ----

signal_trial() {
	local sig=$1 i=$2 o pid out arp stop t0 tstart
	o=$(owner)
	out=$WORK/$sig-$i-http.jsonl
	arp=$WORK/$sig-$i-arp.jsonl
	stop=$WORK/stop
	bg_probe "$out" "$stop" http --url "$URL" --interval 20ms --timeout 100ms
	bg_probe "$arp" "$stop" arp --ip "$VIP" --watch --interval 20ms --duration 0
	sleep 1
	pid=$(sed -n "s/^pid_speaker-$o=//p" "$STATE" | tail -n 1)
	[[ $pid =~ ^[0-9]+$ && $(tr '\0' ' ' <"/proc/$pid/cmdline") == *"/.cache/lab/bin/speaker"* ]] ||
		die "cannot find speaker-$o's PID"
	# Signal it here rather than through `hack/lab.sh speaker`, so the
	# timestamp is the signal's, not that of a shell starting.
	t0=$(now_ms)
	kill "-$sig" "$pid"
	KILLED=$o
	sleep 4
	tstart=$(now_ms)
	lab speaker start "$o" 2>/dev/null
	KILLED=""
	sleep 4
	stop_bg "$stop"
	python3 - "$out" "$arp" "$o" "${MAC[$o]}" "$t0" "$tstart" <<'EOF' | tee -a "$WORK/$sig.results"
import json, sys
http, arp, old, oldmac, t0, tstart = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
rs = [json.loads(l) for l in open(http) if l.strip()]
failed = [r for r in rs if not r["ok"]]
rounds = [json.loads(l) for l in open(arp) if l.strip()]
rounds = [r for r in rounds if not r.get("summary")]
handoff, multi, back = -1.0, 0, -1.0
for r in rounds:
    if len(r["macs"]) > 1:
        multi += 1
    if handoff < 0 and r["unix_ms"] >= t0:
        for m in r["macs"]:
            if m != oldmac:
                handoff = r["unix_ms"] + r["lat_us"][m] / 1000 - t0
        if handoff < 0 and any(m != oldmac for m in r["grat"]):
            handoff = r["unix_ms"] - t0
    if back < 0 and r["unix_ms"] >= tstart and oldmac in r["macs"] + r["grat"]:
        back = r["unix_ms"] - tstart
nodes = {}
for r in rs:
    if r["ok"]:
        nodes[r["node"]] = nodes.get(r["node"], 0) + 1
fails = " ".join(f'+{r["unix_ms"]-t0:.0f}ms:{r.get("err","")[:60]!r}' for r in failed[:5])
print(f"owner={old} requests={len(rs)} failed={len(failed)} handoff_ms={handoff:.0f} "
      f"back_after_restart_ms={back:.0f} rounds_two_macs={multi} by_node={nodes} {fails}")
EOF
	sleep 2
}

pctl() { # pctl P FILE KEY: percentile P of KEY=value over FILE's lines (nearest rank)
	python3 - "$@" <<'EOF'
import math, re, sys
p, path, key = float(sys.argv[1]), sys.argv[2], sys.argv[3]
v = sorted(float(m.group(1)) for l in open(path) for m in [re.search(r"\b" + key + r"=(-?[0-9.]+)", l)] if m)
if not v:
    print("n/a"); sys.exit()
print(f"{v[max(0, math.ceil(p / 100 * len(v)) - 1)]:.0f}")
EOF
}
sum_key() { awk -v k="$2" '{ for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) s += substr($i, length(k) + 2) } END { print s + 0 }' "$1"; }

RESULTS=()
say() {
	RESULTS+=("$*")
	echo "$*"
}

log "node cut: $TRIALS trials"
for ((i = 1; i <= TRIALS; i++)); do
	printf 'node trial %2d: ' "$i"
	node_trial "$i"
done
say "failover node p50=$(pctl 50 "$WORK/node.results" failover_ms) max=$(pctl 100 "$WORK/node.results" failover_ms)" \
	"(failed requests per trial p50=$(pctl 50 "$WORK/node.results" failed_cut) max=$(pctl 100 "$WORK/node.results" failed_cut))"
say "failback switches_max=$(pctl 100 "$WORK/node.results" switches) settle_max=$(pctl 100 "$WORK/node.results" settle_ms)" \
	"failed_max=$(pctl 100 "$WORK/node.results" failed_back)" \
	"client_moves_max=$(pctl 100 "$WORK/node.results" client_moves)" \
	"(failed requests after uncut, all trials: $(sum_key "$WORK/node.results" failed_back)," \
	"of which in flight while the client's entry moved: $(sum_key "$WORK/node.results" failed_inflight);" \
	"ARP rounds with two MACs after uncut: $(sum_key "$WORK/node.results" arp_two_macs))"

for sig in KILL TERM; do
	log "speaker SIG$sig: $TRIALS trials"
	for ((i = 1; i <= TRIALS; i++)); do
		printf '%s trial %2d: ' "${sig,,}" "$i"
		signal_trial "$sig" "$i"
	done
	name=${sig,,}
	say "failover $name failed=$(sum_key "$WORK/$sig.results" failed) handoff_p50=$(pctl 50 "$WORK/$sig.results" handoff_ms)" \
		"(handoff max=$(pctl 100 "$WORK/$sig.results" handoff_ms); rounds with two MACs: $(sum_key "$WORK/$sig.results" rounds_two_macs))"
done

log "steady state: ARP and HTTP every 20 ms for $STEADY s"
o=$(owner)
bg_probe "$WORK/steady-http.jsonl" "$WORK/stop" http --url "$URL" --interval 20ms --timeout 100ms
probe arp --ip "$VIP" --watch --interval 20ms --duration "${STEADY}s" >"$WORK/steady-arp.jsonl"
stop_bg "$WORK/stop"
steady=$(tail -n 1 "$WORK/steady-arp.jsonl")
say "steady distinct_macs=$(jq '.distinct_macs | length' <<<"$steady") arp_p99_us=$(jq .lat_p99_us <<<"$steady")" \
	"(owner $o; rounds=$(jq .rounds <<<"$steady") unanswered=$(jq .rounds_no_answer <<<"$steady")" \
	"two_macs=$(jq .rounds_multi <<<"$steady") p50_us=$(jq .lat_p50_us <<<"$steady") max_us=$(jq .lat_max_us <<<"$steady");" \
	"http failed=$(jq -s 'map(select(.ok | not)) | length' "$WORK/steady-http.jsonl")/$(wc -l <"$WORK/steady-http.jsonl"))"

speaker_rss() { # "n1=12.3 n2=… max=…" in MB
	local n pid kb out="" max=0
	for n in n1 n2 n3; do
		pid=$(sed -n "s/^pid_speaker-$n=//p" "$STATE" | tail -n 1)
		kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
		out+="$n=$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }') "
		((kb > max)) && max=$kb
	done
	echo "${out}max=$(awk -v k="$max" 'BEGIN { printf "%.1f", k / 1024 }')"
}
# shellcheck source=hack/lib/vips.sh
source "$ROOT/hack/lib/vips.sh"

if ((!SKIP_RSS)); then
	log "RSS: widening the pool and creating $VIPS Services"
	rss0=$(speaker_rss)
	owned0=$(vips_owned_total)
	RSS_CM=$WORK/config-before.yaml
	kc -n ironlb-system get configmap config -o yaml >"$RSS_CM"
	vips_widen_pool
	kc create namespace "$RSS_NS" >/dev/null
	t0=$SECONDS
	vips_services "$RSS_NS" 0 "$VIPS" >"$WORK/rss-services.yaml"
	kc create -f "$WORK/rss-services.yaml" >/dev/null
	log "created $VIPS Services in $((SECONDS - t0)) s; waiting for addresses and owners"
	want=$((owned0 + VIPS))
	for ((i = 0; i < 180; i++)); do
		have=$(kc -n "$RSS_NS" get svc -o jsonpath='{range .items[*]}{.status.loadBalancer.ingress[0].ip}{"\n"}{end}' | grep -c . || true)
		owned=$(vips_owned_total)
		((have >= VIPS && owned >= want)) && break
		sleep 1
	done
	log "$have Services with an address, $owned addresses announced (want $want) after $((SECONDS - t0)) s"
	sleep 5
	probe arp --ip "$VIP" --watch --interval 20ms --duration 10s >"$WORK/rss-arp.jsonl"
	rss1=$(speaker_rss)
	lat=$(tail -n 1 "$WORK/rss-arp.jsonl")
	say "rss vips=$owned speaker_rss_max_mb=${rss1##*max=} (with $owned announced: ${rss1% max=*}; before: $rss0;" \
		"ARP p99 with them $(jq .lat_p99_us <<<"$lat") us, distinct MACs $(jq '.distinct_macs | length' <<<"$lat"))"
fi

echo
echo "==== summary ($TRIALS trials; raw data in $WORK)"
printf '%s\n' "${RESULTS[@]}"
