//go:build integration

package speaker

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/hack/testenv"
	"github.com/ironlb/ironlb/speaker/election"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }

// recorder is an Announcer that remembers what it was told.
type recorder struct {
	mu      sync.Mutex
	owned   map[netip.Addr][]string
	refresh map[netip.Addr]time.Duration
	drains  map[netip.Addr][]net.HardwareAddr
	// early lists drains withdrawn while their address was still owned:
	// the announcer would answer for it again in between.
	early []netip.Addr
}

func (r *recorder) SetDraining(drains map[netip.Addr][]net.HardwareAddr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ip := range r.drains {
		if _, still := drains[ip]; !still {
			if _, owned := r.owned[ip]; owned {
				r.early = append(r.early, ip)
			}
		}
	}
	r.drains = maps.Clone(drains)
}

func (r *recorder) draining() (map[netip.Addr][]net.HardwareAddr, []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.drains), slices.Clone(r.early)
}

func (r *recorder) SetOwned(owned map[netip.Addr][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.owned = maps.Clone(owned)
}

func (r *recorder) SetRefresh(intervals map[netip.Addr]time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refresh = maps.Clone(intervals)
}

func (r *recorder) refreshes() map[netip.Addr]time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.refresh)
}

func (r *recorder) get() map[netip.Addr][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.owned)
}

type cluster struct {
	t        *testing.T
	speakers map[string]*Speaker
	anns     map[string]*recorder
	class    string
}

func newCluster(t *testing.T, class, cfg string, nodes ...string) *cluster {
	return newClusterWith(t, class, cfg, nil, nodes...)
}

// newClusterWith is newCluster with a hook to adjust each speaker's
// Options.
func newClusterWith(t *testing.T, class, cfg string, adjust func(node string, o *Options), nodes ...string) *cluster {
	ctx, cancel := context.WithCancel(context.Background())
	ns := env.Namespace(t)
	_, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "config"}, Data: map[string]string{"config": cfg}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No controller runs here: accept the config as it would.
	acc := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: api.AcceptedConfigName("config"), Annotations: map[string]string{api.AnnotationAcceptedSHA256: api.ConfigHash(cfg)}},
		Data:       map[string]string{"config": cfg},
	}
	if _, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctx, acc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, speakers: map[string]*Speaker{}, anns: map[string]*recorder{}, class: class}
	var wg sync.WaitGroup
	for _, n := range nodes {
		c.anns[n] = &recorder{}
		o := Options{NodeName: n, Namespace: ns, ConfigName: "config", LBClass: class}
		if adjust != nil {
			adjust(n, &o)
		}
		s := New(env.Client, c.anns[n], o)
		c.speakers[n] = s
		wg.Go(func() { s.Run(ctx) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	c.members(nodes...)
	return c
}

func (c *cluster) members(live ...string) {
	for _, s := range c.speakers {
		s.MembersChanged(live)
	}
}

// owners returns, per address, the nodes announcing it.
func (c *cluster) owners() map[netip.Addr][]string {
	out := map[netip.Addr][]string{}
	for n, r := range c.anns {
		for ip := range r.get() {
			out[ip] = append(out[ip], n)
		}
	}
	for ip := range out {
		slices.Sort(out[ip])
	}
	return out
}

func (c *cluster) waitOwners(what string, cond func(map[netip.Addr][]string) bool) map[netip.Addr][]string {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		o := c.owners()
		if cond(o) {
			return o
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s; owners %v", what, o)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func node(t *testing.T, name string, ready bool, lbls map[string]string) {
	ctx := context.Background()
	n, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status := corev1.ConditionTrue
	if !ready {
		status = corev1.ConditionFalse
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status}}
	if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// lbService creates a Service that the controller would have assigned ip.
func lbService(t *testing.T, ns, name, class, ip string, local bool) {
	ctx := context.Background()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	if local {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	s, err := env.Client.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vip := corev1.LoadBalancerIPModeVIP
	s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: &vip}}
	if _, err := env.Client.CoreV1().Services(ns).UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func endpoints(t *testing.T, ns, svc string, nodes ...string) {
	ctx := context.Background()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc, Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "test.ironlb.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, n := range nodes {
		ready := true
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.0.%d", i+1)}, NodeName: &n, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	cur, err := env.Client.DiscoveryV1().EndpointSlices(ns).Get(ctx, svc, metav1.GetOptions{})
	if err == nil {
		cur.Endpoints = es.Endpoints
		_, err = env.Client.DiscoveryV1().EndpointSlices(ns).Update(ctx, cur, metav1.UpdateOptions{})
	} else {
		_, err = env.Client.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func exactlyOne(o map[netip.Addr][]string, ips ...string) bool {
	for _, ip := range ips {
		if len(o[netip.MustParseAddr(ip)]) != 1 {
			return false
		}
	}
	return true
}

func TestElectionAcrossSpeakers(t *testing.T) {
	suffix := fmt.Sprint(time.Now().UnixNano() % 100000)
	n1, n2, n3, n4 := "a-"+suffix, "b-"+suffix, "c-"+suffix, "d-"+suffix
	node(t, n1, true, nil)
	node(t, n2, true, map[string]string{"rack": "r2"})
	node(t, n3, true, nil)
	node(t, n4, false, nil) // not Ready: never a candidate
	class := "speaker.ironlb.io/" + suffix
	c := newCluster(t, class, "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.100-198.51.100.119]}\n"+
		"- {name: r2, protocol: layer2, addresses: [198.51.100.120/32], node-selectors: [{match-labels: {rack: r2}}]}\n", n1, n2, n3, n4)
	ns := env.Namespace(t)
	var ips []string
	for i := range 20 {
		ip := fmt.Sprintf("198.51.100.%d", 100+i)
		ips = append(ips, ip)
		lbService(t, ns, fmt.Sprint("s", i), class, ip, false)
	}
	lbService(t, ns, "pinned", class, "198.51.100.120", false)
	lbService(t, ns, "local", class, "198.51.100.119", true)
	endpoints(t, ns, "local", n3)

	all := c.waitOwners("one owner per address", func(o map[netip.Addr][]string) bool { return exactlyOne(o, append(ips, "198.51.100.120")...) })
	// Every speaker computed the same owner, the one election picks.
	for _, ip := range ips[:19] {
		a := netip.MustParseAddr(ip)
		if want := election.Owner(a, []string{n1, n2, n3}); all[a][0] != want {
			t.Errorf("%s announced by %v, election says %s", ip, all[a], want)
		}
	}
	if got := all[netip.MustParseAddr("198.51.100.120")]; got[0] != n2 {
		t.Errorf("node-selected pool announced by %v, want %s", got, n2)
	}
	if got := all[netip.MustParseAddr("198.51.100.119")]; got[0] != n3 {
		t.Errorf("Local Service announced by %v, want its endpoint's node %s", got, n3)
	}
	for ip, nodes := range all {
		if slices.Contains(nodes, n4) {
			t.Errorf("not-Ready %s announces %s", n4, ip)
		}
	}

	// Endpoints move: the Local Service's owner follows.
	endpoints(t, ns, "local", n1)
	c.waitOwners("the Local owner to follow its endpoint", func(o map[netip.Addr][]string) bool {
		return slices.Equal(o[netip.MustParseAddr("198.51.100.119")], []string{n1})
	})

	// n1 dies: only its addresses move, each to exactly one survivor.
	before := c.owners()
	c.speakers[n1].SetIsolated(true) // a dead node announces nothing
	c.members(n2, n3)
	after := c.waitOwners("n1's addresses to move", func(o map[netip.Addr][]string) bool {
		for _, ip := range ips[:19] {
			if nodes := o[netip.MustParseAddr(ip)]; len(nodes) != 1 || nodes[0] == n1 {
				return false
			}
		}
		return true
	})
	for _, ip := range ips[:19] {
		a := netip.MustParseAddr(ip)
		if before[a][0] != n1 && after[a][0] != before[a][0] {
			t.Errorf("%s moved from %s to %s although its owner lived", ip, before[a][0], after[a][0])
		}
	}
	// The Local Service's only endpoint node is gone: nobody announces it.
	if got := after[netip.MustParseAddr("198.51.100.119")]; len(got) != 0 {
		t.Errorf("Local Service without a live endpoint node announced by %v", got)
	}

	// nodeAssigned fires on a change of owner only: one per Service that
	// changed hands plus the initial ones, never repeated on resync.
	time.Sleep(time.Second)
	evs, err := env.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, e := range evs.Items {
		if e.Reason == api.EventNodeAssigned {
			// events.k8s.io/v1 Events count repeats in a series.
			n := 1
			if e.Series != nil {
				n = int(e.Series.Count)
			}
			per[e.InvolvedObject.Name] += n
		}
	}
	moved := 0
	for i, ip := range ips[:19] {
		a := netip.MustParseAddr(ip)
		want := 1
		if before[a][0] != after[a][0] {
			want, moved = 2, moved+1
		}
		if per[fmt.Sprint("s", i)] != want {
			t.Errorf("s%d has %d nodeAssigned Events, want %d", i, per[fmt.Sprint("s", i)], want)
		}
	}
	if moved == 0 {
		t.Error("n1 owned nothing: the test proves nothing about failover")
	}

	// One failover sample per survivor that took something over, however
	// many addresses it took; none from the initial assignment.
	takers := map[string]bool{}
	for _, ip := range ips[:19] {
		a := netip.MustParseAddr(ip)
		if before[a][0] == n1 {
			takers[after[a][0]] = true
		}
	}
	for _, n := range []string{n1, n2, n3} {
		count, sum := failoverSamples(t, c.speakers[n])
		want := uint64(0)
		if takers[n] {
			want = 1
		}
		if count != want {
			t.Errorf("%s: ironlb_failover_seconds has %d samples, want %d", n, count, want)
		}
		if count > 0 && (sum <= 0 || sum > 10) {
			t.Errorf("%s: failover took %v s by the histogram", n, sum)
		}
	}
}

// failoverSamples reads the speaker's failover histogram.
func failoverSamples(t *testing.T, s *Speaker) (uint64, float64) {
	t.Helper()
	mfs, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "ironlb_failover_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("no ironlb_failover_seconds metric")
	return 0, 0
}

// TestPoolRefreshInterval: a pool's refresh-interval reaches the announcer
// for the addresses of that pool this node announces; "0" turns it off;
// other pools keep the speaker's default.
func TestPoolRefreshInterval(t *testing.T) {
	suffix := fmt.Sprint(time.Now().UnixNano() % 100000)
	n1 := "a-" + suffix
	node(t, n1, true, nil)
	class := "speaker.ironlb.io/" + suffix
	c := newCluster(t, class, "address-pools:\n"+
		"- {name: fast, protocol: layer2, addresses: [198.51.100.100/32], refresh-interval: 15s}\n"+
		"- {name: quiet, protocol: layer2, addresses: [198.51.100.101/32], refresh-interval: '0'}\n"+
		"- {name: plain, protocol: layer2, addresses: [198.51.100.102/32]}\n", n1)
	ns := env.Namespace(t)
	for i, ip := range []string{"198.51.100.100", "198.51.100.101", "198.51.100.102"} {
		lbService(t, ns, fmt.Sprint("s", i), class, ip, false)
	}
	c.waitOwners("all three announced", func(o map[netip.Addr][]string) bool {
		return exactlyOne(o, "198.51.100.100", "198.51.100.101", "198.51.100.102")
	})
	want := map[netip.Addr]time.Duration{netip.MustParseAddr("198.51.100.100"): 15 * time.Second, netip.MustParseAddr("198.51.100.101"): 0}
	deadline := time.Now().Add(10 * time.Second)
	for !maps.Equal(c.anns[n1].refreshes(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("refresh intervals %v, want %v", c.anns[n1].refreshes(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHandoverDrainsToNewOwner: when a node joins, the addresses it takes
// over drain on the node that had them: still announced there, and handed
// to the announcer as draining towards the new owner's MACs, so that the
// responders stop answering on the new owner's first announcement. Once
// the speaker hears it, the next sync withdraws the address, then the
// drain, in that order.
func TestHandoverDrainsToNewOwner(t *testing.T) {
	c, a, b, macs := macCluster(t, "198.51.100.100-198.51.100.109")
	c.members(a) // b's speaker is not up yet
	ns := env.Namespace(t)
	var ips []netip.Addr
	for i := range 10 {
		ip := fmt.Sprintf("198.51.100.%d", 100+i)
		ips = append(ips, netip.MustParseAddr(ip))
		lbService(t, ns, fmt.Sprint("s", i), c.class, ip, false)
	}
	c.waitOwners("a to announce everything", func(o map[netip.Addr][]string) bool {
		for _, ip := range ips {
			if !slices.Equal(o[ip], []string{a}) {
				return false
			}
		}
		return true
	})

	c.members(a, b)
	var moved []netip.Addr
	for _, ip := range ips {
		if election.Owner(ip, []string{a, b}) == b {
			moved = append(moved, ip)
		}
	}
	if len(moved) == 0 {
		t.Fatal("b takes nothing over: the test proves nothing")
	}
	// b announces its share; a still does too, draining towards b's MAC.
	c.waitOwners("b to announce its share while a drains", func(o map[netip.Addr][]string) bool {
		for _, ip := range moved {
			if !slices.Equal(o[ip], []string{a, b}) {
				return false
			}
		}
		return true
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		d, _ := c.anns[a].draining()
		want := map[netip.Addr][]net.HardwareAddr{}
		for _, ip := range moved {
			want[ip] = []net.HardwareAddr{macs[b]}
		}
		if sameDrainTargets(d, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's announcer drains %v, want %v", d, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d, _ := c.anns[b].draining(); len(d) != 0 {
		t.Errorf("b drains %v, want nothing", d)
	}

	// a hears b announce the first address: that one ends, the others
	// keep draining.
	c.speakers[a].DuplicateAnnouncer(context.Background(), moved[0], macs[b])
	c.waitOwners("a to withdraw the address b was heard announcing", func(o map[netip.Addr][]string) bool {
		return slices.Equal(o[moved[0]], []string{b})
	})
	deadline = time.Now().Add(15 * time.Second)
	for {
		d, early := c.anns[a].draining()
		_, still := d[moved[0]]
		if len(early) > 0 {
			t.Fatalf("drains withdrawn while their address was still announced: %v", early)
		}
		if !still && len(d) == len(moved)-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's announcer drains %v after b was heard on %s", d, moved[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, ip := range moved[1:] {
		if o := c.owners()[ip]; !slices.Equal(o, []string{a, b}) {
			t.Errorf("%s announced by %v while a still drains it, want both", ip, o)
		}
	}
}

// TestFailbackDrainIsExpected: an owner cut off from the others comes
// back and takes its addresses again, while the node that had them
// meanwhile drains them. The returning owner hears that node's answers:
// part of the handover, not a duplicate announcer (no count, no Event, no
// split-brain reminders). The same node's claims on an address assigned
// after the return still are one.
func TestFailbackDrainIsExpected(t *testing.T) {
	c, a, b, macs := macCluster(t, "198.51.100.100-198.51.100.119")
	ns := env.Namespace(t)
	var bs, later []netip.Addr // b's addresses now, and one for after b's return
	for i := range 20 {
		ip := netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", 100+i))
		if election.Owner(ip, []string{a, b}) != b {
			continue
		}
		if len(bs) < 3 {
			bs = append(bs, ip)
			lbService(t, ns, fmt.Sprint("s", i), c.class, ip.String(), false)
		} else if len(later) == 0 {
			later = append(later, ip)
		}
	}
	if len(bs) < 3 || len(later) == 0 {
		t.Fatalf("b owns too few addresses of the pool: %v, %v", bs, later)
	}
	c.waitOwners("b to announce its addresses", func(o map[netip.Addr][]string) bool {
		for _, ip := range bs {
			if !slices.Equal(o[ip], []string{b}) {
				return false
			}
		}
		return true
	})

	// b is cut off: it announces nothing, a takes everything over.
	c.speakers[b].SetIsolated(true)
	c.speakers[b].MembersChanged([]string{b})
	c.speakers[a].MembersChanged([]string{a})
	c.waitOwners("a to take b's addresses over", func(o map[netip.Addr][]string) bool {
		for _, ip := range bs {
			if !slices.Equal(o[ip], []string{a}) {
				return false
			}
		}
		return true
	})

	// b comes back, as the speaker's link watcher brings it back: the
	// merged view first, then the end of the isolation.
	c.speakers[b].MembersChanged([]string{a, b})
	c.speakers[b].SetIsolated(false)
	c.speakers[a].MembersChanged([]string{a, b})
	c.waitOwners("b to announce its addresses again while a drains them", func(o map[netip.Addr][]string) bool {
		for _, ip := range bs {
			if !slices.Contains(o[ip], b) {
				return false
			}
		}
		return true
	})
	for _, ip := range bs {
		c.speakers[b].DuplicateAnnouncer(context.Background(), ip, macs[a])
		if n := dupCount(t, c.speakers[b], ip); n != 0 {
			t.Errorf("b counted a's drain answers on %s as a duplicate announcer (%v)", ip, n)
		}
	}
	c.speakers[b].mu.Lock()
	splits := maps.Clone(c.speakers[b].splits)
	c.speakers[b].mu.Unlock()
	if len(splits) != 0 {
		t.Errorf("b keeps reminding a, which only drained: %v", splits)
	}

	// An address assigned after the return was never a's: a claim by a
	// on it is a duplicate announcer.
	lbService(t, ns, "later", c.class, later[0].String(), false)
	c.waitOwners("b to announce the new address", func(o map[netip.Addr][]string) bool {
		return slices.Equal(o[later[0]], []string{b})
	})
	c.speakers[b].DuplicateAnnouncer(context.Background(), later[0], macs[a])
	if n := dupCount(t, c.speakers[b], later[0]); n != 1 {
		t.Errorf("a's claim on %s, assigned after b's return: counted %v, want 1", later[0], n)
	}
}

// macCluster starts speakers for two fresh Ready nodes a and b that know
// each other's MACs (withMACs), with one layer-2 pool of addresses.
func macCluster(t *testing.T, addresses string) (c *cluster, a, b string, macs map[string]net.HardwareAddr) {
	suffix := fmt.Sprint(time.Now().UnixNano() % 100000)
	a, b = "a-"+suffix, "b-"+suffix
	node(t, a, true, nil)
	node(t, b, true, nil)
	macs = map[string]net.HardwareAddr{a: {0x02, 0, 0xc6, 0x33, 0x64, 0x0b}, b: {0x02, 0, 0xc6, 0x33, 0x64, 0x0c}}
	c = newClusterWith(t, "speaker.ironlb.io/"+suffix,
		"address-pools:\n- {name: p, protocol: layer2, addresses: ["+addresses+"]}\n", withMACs(macs), a, b)
	return c, a, b, macs
}

// withMACs gives the speakers of a cluster the MACs in macs (one per node)
// as the membership directory would, and an hour of LocalServingWait, so
// that no drain or return window ends on its bound during a test.
func withMACs(macs map[string]net.HardwareAddr) func(string, *Options) {
	return func(_ string, o *Options) {
		o.LocalServingWait = time.Hour
		o.MACOwner = func(m net.HardwareAddr) string {
			for n, nm := range macs {
				if nm.String() == m.String() {
					return n
				}
			}
			return ""
		}
		o.MACsOf = func(n string) []net.HardwareAddr { return []net.HardwareAddr{macs[n]} }
	}
}
