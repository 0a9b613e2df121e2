# Helpers for benchmarks that announce many addresses in the process lab
# (hack/lab.sh). Source it with ROOT set to the repository; kc must be a
# kubectl function for the lab.

# vips_owned_total: addresses announced by the three lab speakers together,
# from their ironlb_speaker_owned_addresses gauges.
vips_owned_total() { vips_metric_total ironlb_speaker_owned_addresses; }

# vips_metric_total NAME: the unlabelled metric NAME of the three lab
# speakers, summed.
vips_metric_total() {
	local n t=0 v
	for n in n1 n2 n3; do
		v=$(bash "$ROOT/hack/lab.sh" exec client curl -s --max-time 3 "http://198.51.100.1${n#n}:7474/metrics" |
			awk -v name="$1" '$1 == name { printf "%d", $2 }')
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

# vips_condition_writes_total: the ironlb.io/Announced condition writes of
# the three lab speakers, summed.
vips_condition_writes_total() { vips_metric_total ironlb_speaker_condition_writes_total; }

# vips_settled: waits (up to 300 s) until no speaker has written a Service
# condition for 10 s: announcing a new address is followed by its condition
# write, off the announcing path, and an idle measurement must not include
# that work.
vips_settled() {
	local i last=-1 now same=0
	for ((i = 0; i < 300; i++)); do
		now=$(vips_condition_writes_total)
		if ((now == last)); then
			((++same >= 10)) && return 0
		else
			same=0
		fi
		last=$now
		sleep 1
	done
	echo "vips: condition writes still going after 300 s" >&2
	return 1
}

# vips_widen_pool: the lab pool grown to every IPv4 address from .100 up
# and 4,113 IPv6 addresses (the caller saves the ConfigMap first to put it
# back).
vips_widen_pool() {
	kc apply -f - >/dev/null <<'YAML'
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
      - 198.51.100.100-198.51.100.254
      - 2001:db8:100::100-2001:db8:100::110
      - 2001:db8:100::1000-2001:db8:100::1fff
YAML
}

# vips_services NS FROM TO: the manifests of LoadBalancer Services vip-FROM
# to vip-(TO-1) in NS; the first 150 are IPv4 (the lab's IPv4 pool is
# small), the rest IPv6.
vips_services() {
	python3 - "$1" "$2" "$3" <<'PY'
import sys
ns, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(lo, hi):
    fam = "IPv4" if i < 150 else "IPv6"
    print(f"""---
apiVersion: v1
kind: Service
metadata: {{name: vip-{i:04d}, namespace: {ns}}}
spec:
  type: LoadBalancer
  ipFamilyPolicy: SingleStack
  ipFamilies: [{fam}]
  ports: [{{name: http, port: 80, protocol: TCP}}]""")
PY
}
