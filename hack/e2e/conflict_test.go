//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/hack/e2e/harness"
)

// Pool addresses the conflict test requests (the lab's pool is
// 198.51.100.100-110 and 2001:db8:100::100-110); the last ones, which
// other tests, allocating from the start, do not reach.
const (
	conflictV4 = "198.51.100.110"
	conflictV6 = "2001:db8:100::110"
	freshV4    = "198.51.100.109"
	freshV6    = "2001:db8:100::109"
)

// TestAddressConflict: the client already holds a pool address on its
// interface (IPv4 and IPv6) when a Service is given that address. The
// elected node probes before announcing (ARP probe, DAD), the client's
// kernel answers, and the address is not announced: no node answers ARP
// or NDP for it, and an AddressConflict Warning names the client's MAC.
// Once the client drops the address, the node's re-probe finds it free
// and announces it, and the Service answers curl, with nothing restarted.
// A fresh Service with no conflict measures what the probe costs.
func TestAddressConflict(t *testing.T) {
	// The client takes the addresses before the Service exists.
	for _, a := range []string{conflictV4 + "/32", conflictV6 + "/128"} {
		args := []string{"exec", "client", "ip", "addr", "add", a, "dev", "eth0"}
		if strings.Contains(a, ":") {
			args = append(args, "nodad")
		}
		lab(t, args...)
		t.Cleanup(func() {
			tryCmd("", nil, "bash", "hack/lab.sh", "exec", "client", "ip", "addr", "del", a, "dev", "eth0")
		})
	}

	ns := namespace(t, "e2e-conflict")
	service(t, ns, "web", annotated(conflictV4+","+conflictV6, dualStack))
	ips := ingress(t, ns, "web", 2)
	slices.Sort(ips)
	if want := []string{conflictV4, conflictV6}; !slices.Equal(ips, want) {
		t.Fatalf("ingress %v, want the requested %v", ips, want)
	}

	// The Warning, once per address, naming the client's MAC; its
	// source names the node that probed.
	owners := map[string]string{}
	deadline := time.Now().Add(15 * time.Second)
	for len(owners) < 2 {
		evs, _ := tryCmd("", nil, "bash", "hack/kubectl", "--request-timeout=5s", "-n", ns, "get", "events",
			"--field-selector", "reason=AddressConflict,type=Warning",
			"-o", `jsonpath={range .items[*]}{.reportingInstance}{"|"}{.series.count}{"|"}{.message}{"\n"}{end}`)
		for _, l := range strings.Split(strings.TrimSpace(evs), "\n") {
			f := strings.SplitN(l, "|", 3)
			if len(f) != 3 || !strings.Contains(f[2], clientMAC) {
				continue
			}
			for _, ip := range ips {
				if strings.Contains(f[2], "address "+ip+" ") && owners[ip] == "" {
					owners[ip] = f[0]
					t.Logf("Event from %s (count %s): %s", f[0], f[1], f[2])
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no AddressConflict Warning naming %s for each of %v within 15 s; events:\n%s", clientMAC, ips, evs)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// No node answers: asked from hosts other than the client (which
	// answers itself). The control plane has no IPv6, and a node never
	// hears its own answers, so IPv6 is asked from every node.
	time.Sleep(time.Second) // past any announcement that could have raced the Event
	askers := map[string][]string{conflictV4: {"cp"}, conflictV6: nodes}
	for _, ip := range ips {
		for range 3 {
			for _, from := range askers[ip] {
				macs := askFrom(t, from, ip)
				for _, m := range macs {
					if n := macNode[m]; n != "" {
						t.Errorf("%s is answered by node %s (%s) while the client holds it (asked from %s)", ip, n, m, from)
					}
				}
				if !slices.Contains(macs, clientMAC) {
					t.Errorf("asked from %s, %s is answered by %v: want the client %s, which holds it", from, ip, macs, clientMAC)
				}
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	for _, ip := range ips {
		m := metrics(t, owners[ip])
		if v := metricValue(m, fmt.Sprintf(`ironlb_speaker_address_conflicts_total{address=%q}`, ip)); v < 1 {
			t.Errorf("%s's ironlb_speaker_address_conflicts_total for %s = %v, want ≥ 1", owners[ip], ip, v)
		}
		if v := metricValue(m, "ironlb_speaker_addresses_held_back"); v < 1 {
			t.Errorf("%s's ironlb_speaker_addresses_held_back = %v, want ≥ 1 while %s is in conflict", owners[ip], v, ip)
		}
	}

	// The Service's status says so too: the condition, written by the
	// owner of its first address, names the address and the client's MAC.
	cond := waitAnnounced(t, ns, "web", 15*time.Second, func(status, reason, msg string) bool {
		return status == "False" && reason == "AddressConflict" && strings.Contains(msg, clientMAC)
	})
	t.Logf("condition while in conflict: %s", cond)

	// The client releases the addresses: the owner announces each on its
	// next re-probe, and the Service answers.
	watch := map[string]*harness.Probe{}
	for _, ip := range ips {
		watch[ip] = h.StartProbe(t, "arp", "--ip", ip, "--watch", "--interval", "50ms", "--duration", "0")
	}
	time.Sleep(300 * time.Millisecond)
	released := time.Now()
	for _, a := range []string{conflictV4 + "/32", conflictV6 + "/128"} {
		lab(t, "exec", "client", "ip", "addr", "del", a, "dev", "eth0")
	}
	for _, ip := range ips {
		var at time.Time
		for deadline := released.Add(45 * time.Second); at.IsZero() && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			for _, r := range watch[ip].Rounds(t) {
				if r.At().After(released) && slices.Contains(r.MACs, nodeMAC[owners[ip]]) {
					at = r.At()
					break
				}
			}
		}
		watch[ip].Stop()
		if at.IsZero() {
			t.Fatalf("%s still not answered by %s 45 s after the client released it", ip, owners[ip])
		}
		t.Logf("%s: answered by %s %.0f ms after the client released it (re-probe backoff, then the 0.7 s probe)", ip, owners[ip], msSince(released, at))
		ownerIs(t, ip, owners[ip], 5*time.Second)
		curlUntil(t, url(ip, 80), "UP "+owners[ip], 10*time.Second)
		t.Logf("%s: curl says UP %s", ip, owners[ip])
		if v := metricValue(metrics(t, owners[ip]), "ironlb_speaker_addresses_held_back"); v != 0 {
			t.Logf("%s's held-back gauge is %v after %s came free (another address may still wait)", owners[ip], v, ip)
		}
	}

	cond = waitAnnounced(t, ns, "web", 15*time.Second, func(status, reason, msg string) bool {
		return status == "True" && reason == "Announced" && strings.Contains(msg, ips[0]+" by ") && strings.Contains(msg, ips[1]+" by ")
	})
	t.Logf("condition once free: %s", cond)

	// A fresh Service without a conflict: the time from creating it to
	// the first answer, and the probe's own share from the owner's
	// ironlb_speaker_probe_seconds.
	before := map[string][2]float64{}
	for _, n := range nodes {
		m := metrics(t, n)
		before[n] = [2]float64{metricValue(m, "ironlb_speaker_probe_seconds_sum"), metricValue(m, "ironlb_speaker_probe_seconds_count")}
	}
	fresh := map[string]*harness.Probe{}
	for _, ip := range []string{freshV4, freshV6} {
		fresh[ip] = h.StartProbe(t, "arp", "--ip", ip, "--watch", "--interval", "20ms", "--duration", "0")
	}
	time.Sleep(300 * time.Millisecond)
	created := time.Now()
	service(t, ns, "fresh", annotated(freshV4+","+freshV6, dualStack))
	for _, ip := range []string{freshV4, freshV6} {
		var at time.Time
		var mac string
		for deadline := created.Add(20 * time.Second); at.IsZero() && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			for _, r := range fresh[ip].Rounds(t) {
				if r.At().After(created) && len(r.MACs) > 0 {
					at, mac = r.At(), r.MACs[0]
					break
				}
			}
		}
		fresh[ip].Stop()
		if at.IsZero() {
			t.Fatalf("fresh Service's %s not answered within 20 s", ip)
		}
		o := macNode[mac]
		m := metrics(t, o)
		sum := metricValue(m, "ironlb_speaker_probe_seconds_sum") - before[o][0]
		n := metricValue(m, "ironlb_speaker_probe_seconds_count") - before[o][1]
		probe := "none recorded"
		if n > 0 {
			probe = fmt.Sprintf("%.0f ms per probe (mean of %v on %s)", sum/n*1000, n, o)
		}
		t.Logf("fresh %s: first answered by %s %.0f ms after kubectl apply (controller, informers, probe); probe: %s", ip, o, msSince(created, at), probe)
		if n > 0 && sum/n > 1 {
			t.Errorf("a probe without a conflict took %.0f ms on average, want ≤ 1 s", sum/n*1000)
		}
		curlUntil(t, url(ip, 80), "UP "+o, 10*time.Second)
	}
}

// annotated puts the loadBalancerIPs annotation on a Service spec.
func annotated(ips, spec string) string {
	return fmt.Sprintf("  annotations:\n    ironlb.io/loadBalancerIPs: %q\n%s", ips, spec)
}

// askFrom asks once for ip from the lab host role and returns the MACs
// that answered.
func askFrom(t *testing.T, role, ip string) []string {
	t.Helper()
	out := lab(t, "exec", role, h.Probe, "arp", "--ip", ip, "--wait", "300ms")
	var r harness.ARPRound
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		t.Fatalf("probe arp from %s: %q: %v", role, out, err)
	}
	return r.MACs
}

// metrics scrapes node's speaker.
func metrics(t *testing.T, node string) string {
	t.Helper()
	out, err := tryCmd("", nil, "bash", "hack/lab.sh", "exec", "client", "curl", "-s", "--max-time", "2", "http://"+nodeIP[node]+":7474/metrics")
	if err != nil {
		t.Fatalf("%s's metrics: %v", node, err)
	}
	return out
}

// metricValue returns the value of the sample named exactly series
// (name and labels), 0 when absent.
func metricValue(metrics, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(metrics)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// waitAnnounced waits for the Service's ironlb.io/Announced condition to
// satisfy ok and returns it as "status reason: message".
func waitAnnounced(t *testing.T, ns, name string, wait time.Duration, ok func(status, reason, msg string) bool) string {
	t.Helper()
	var last string
	for deadline := time.Now().Add(wait); ; time.Sleep(200 * time.Millisecond) {
		out, _ := tryCmd("", nil, "bash", "hack/kubectl", "--request-timeout=5s", "-n", ns, "get", "service", name, "-o",
			`jsonpath={range .status.conditions[?(@.type=="ironlb.io/Announced")]}{.status}{"|"}{.reason}{"|"}{.message}{end}`)
		f := strings.SplitN(out, "|", 3)
		if len(f) == 3 {
			last = f[0] + " " + f[1] + ": " + f[2]
			if ok(f[0], f[1], f[2]) {
				return last
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Service %s/%s's ironlb.io/Announced condition after %v: %q", ns, name, wait, last)
		}
	}
}
