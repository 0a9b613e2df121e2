#!/usr/bin/env bash
# Idle cost of the speaker in the network lab (hack/lab.sh). Needs root.
#
#   hack/bench-speaker.sh [--use-running] [--idle SECONDS] [--vips N]
#
# Brings a fresh lab up (three speakers; taken down on every exit path), or
# with --use-running uses the lab that is up and removes only what it
# created. With 1 and then N (default 1000) addresses announced, it waits
# for every address to have an owner and for the speakers to have written
# every Service's condition (nothing written for 10 s), and reads
# the CPU time (utime + stime from /proc) of each speaker over --idle
# seconds (default 60) and its VmRSS at the end:
#
#   speaker idle_cpu_pct=<mean per speaker, percent of one core> rss_mb=<max> vips=<n>
#
# Target (issue 9): idle_cpu_pct <= 1 with 1 and with 1,000 addresses.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USE_RUNNING=0
IDLE=60
VIPS=1000
while (($#)); do
	case $1 in
	--use-running) USE_RUNNING=1 ;;
	--idle) IDLE=$2 && shift ;;
	--vips) VIPS=$2 && shift ;;
	*)
		sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
		exit 2
		;;
	esac
	shift
done
[[ $IDLE =~ ^[0-9]+$ && $IDLE -gt 0 ]] || {
	echo "bench-speaker: --idle wants a positive number of seconds, got \"$IDLE\"" >&2
	exit 2
}
[[ $VIPS =~ ^[0-9]+$ && $VIPS -ge 2 && $VIPS -le 4000 ]] || {
	echo "bench-speaker: --vips wants 2 to 4000 (the lab pool's size), got \"$VIPS\"" >&2
	exit 2
}

log() { printf 'bench-speaker: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
((EUID == 0)) || die "needs root (network namespaces)"

STATE=$ROOT/.cache/lab/state
NS=bench-speaker-$$
kc() { bash "$ROOT/hack/kubectl" --request-timeout=60s "$@"; }

SUFFIX=""
POOL_BACKUP=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if ((USE_RUNNING)); then
		kc delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
		kc -n "$NS" delete svc --all --wait=false >/dev/null 2>&1 || true
		[[ -z $POOL_BACKUP ]] || kc apply -f "$POOL_BACKUP" >/dev/null 2>&1 || true
		[[ -z $POOL_BACKUP ]] || rm -f "$POOL_BACKUP"
	elif [[ -n $SUFFIX && -f $STATE ]] && grep -qx "suffix=$SUFFIX" "$STATE"; then
		bash "$ROOT/hack/lab.sh" down || true
	fi
	exit "$rc"
}
if ((USE_RUNNING)); then
	[[ -f $STATE ]] || die "--use-running: no lab is up"
else
	[[ ! -f $STATE ]] || die "a lab is already up; take it down first or pass --use-running"
fi
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

if ((!USE_RUNNING)); then
	bash "$ROOT/hack/lab.sh" up
fi
SUFFIX=$(sed -n 's/^suffix=//p' "$STATE" | tail -n 1)

# shellcheck source=hack/lib/vips.sh
source "$ROOT/hack/lib/vips.sh"
speaker_pid() { sed -n "s/^pid_speaker-$1=//p" "$STATE" | tail -n 1; }
wait_owned() { # WANT
	local i owned=0
	for ((i = 0; i < 300; i++)); do
		owned=$(vips_owned_total)
		((owned >= $1)) && return 0
		sleep 1
	done
	die "only $owned of $1 addresses announced after 300 s"
}
# measure N: sample the three speakers for IDLE seconds and print the line.
measure() {
	local n pid hz start end total=0 rss_max=0 kb d per=""
	declare -A t0
	for n in n1 n2 n3; do
		pid=$(speaker_pid "$n")
		[[ -r /proc/$pid/stat ]] || die "speaker-$n (pid $pid) is not running"
		t0[$n]=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
	done
	start=$EPOCHREALTIME
	sleep "$IDLE"
	end=$EPOCHREALTIME
	hz=$(getconf CLK_TCK)
	for n in n1 n2 n3; do
		pid=$(speaker_pid "$n")
		d=$(($(awk '{ print $14 + $15 }' "/proc/$pid/stat") - t0[$n]))
		total=$((total + d))
		kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
		((kb > rss_max)) && rss_max=$kb
		per+="$n=$(awk -v d="$d" -v hz="$hz" -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", 100 * d / hz / (b - a) }')% "
	done
	echo "speaker idle_cpu_pct=$(awk -v d="$total" -v hz="$hz" -v a="$start" -v b="$end" \
		'BEGIN { printf "%.2f", 100 * d / hz / (b - a) / 3 }') rss_mb=$(awk -v k="$rss_max" 'BEGIN { printf "%.1f", k / 1024 }') vips=$1"
	log "vips=$1 per speaker: $per"
}

before=$(vips_owned_total)
kc create namespace "$NS" >/dev/null
vips_services "$NS" 0 1 | kc create -f - >/dev/null
wait_owned $((before + 1))
vips_settled
log "1 address announced; sampling for $IDLE s"
measure 1

POOL_BACKUP=$(mktemp /tmp/ironlb-bench-speaker-pool.XXXXXX)
kc -n ironlb-system get configmap config -o yaml >"$POOL_BACKUP"
vips_widen_pool
t0=$SECONDS
vips_services "$NS" 1 "$VIPS" | kc create -f - >/dev/null
wait_owned $((before + VIPS))
log "$VIPS addresses announced after $((SECONDS - t0)) s"
vips_settled
log "no condition written for 10 s, $((SECONDS - t0)) s after the start; sampling for $IDLE s"
measure "$VIPS"
