package speaker

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/speaker/election"
)

// fakeProber hands every Probe call to the test, which answers it.
type fakeProber struct{ calls chan probeCall }

type probeCall struct {
	ctx    context.Context
	ip     netip.Addr
	ifaces []string
	reply  chan []net.HardwareAddr
}

func (f *fakeProber) Probe(ctx context.Context, ip netip.Addr, ifaces []string) ([]net.HardwareAddr, error) {
	c := probeCall{ctx, ip, ifaces, make(chan []net.HardwareAddr)}
	select {
	case f.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case m := <-c.reply:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type guardRig struct {
	t       *testing.T
	g       *probeGuard
	p       *fakeProber
	kicks   chan struct{}
	mu      sync.Mutex
	reports []string
}

var (
	hostMAC    = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	host2MAC   = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 2}
	speakerMAC = net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x12}
)

func newGuardRig(t *testing.T) *guardRig {
	r := &guardRig{t: t, p: &fakeProber{calls: make(chan probeCall)}, kicks: make(chan struct{}, 16)}
	r.g = newProbeGuard(r.p,
		func(m net.HardwareAddr) bool { return m.String() != speakerMAC.String() },
		func() { r.kicks <- struct{}{} },
		func(_ context.Context, ip netip.Addr, mac net.HardwareAddr) {
			r.mu.Lock()
			r.reports = append(r.reports, ip.String()+" "+mac.String())
			r.mu.Unlock()
		},
		NewMetrics())
	r.g.backoff = func(int) time.Duration { return time.Millisecond }
	return r
}

// call waits for the next probe and checks it is for ip.
func (r *guardRig) call(ip netip.Addr) probeCall {
	r.t.Helper()
	select {
	case c := <-r.p.calls:
		if c.ip != ip {
			r.t.Fatalf("probe for %s, want %s", c.ip, ip)
		}
		return c
	case <-time.After(5 * time.Second):
		r.t.Fatalf("no probe for %s", ip)
	}
	return probeCall{}
}

func (r *guardRig) noCall() {
	r.t.Helper()
	select {
	case c := <-r.p.calls:
		r.t.Fatalf("unexpected probe for %s", c.ip)
	case <-time.After(20 * time.Millisecond):
	}
}

func (r *guardRig) kicked() {
	r.t.Helper()
	select {
	case <-r.kicks:
	case <-time.After(5 * time.Second):
		r.t.Fatal("the sync loop was not kicked")
	}
}

func (r *guardRig) reported() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reports)
}

func assigned(ips ...netip.Addr) []election.Address {
	var out []election.Address
	for _, ip := range ips {
		out = append(out, election.Address{IP: ip})
	}
	return out
}

var (
	oldIP  = netip.MustParseAddr("198.51.100.100")
	newIP  = netip.MustParseAddr("198.51.100.101")
	newIP6 = netip.MustParseAddr("2001:db8:100::101")
)

// TestProbeGuardFreshAddress: addresses assigned when the speaker starts
// are announced at once; a new one after that only once a probe found it
// free, and never probed again.
func TestProbeGuardFreshAddress(t *testing.T) {
	synctest.Test(t, testProbeGuardFreshAddress)
}

func testProbeGuardFreshAddress(t *testing.T) {
	r := newGuardRig(t)
	ctx := t.Context()
	if !r.g.gate(ctx, oldIP, nil, false, false) {
		t.Fatal("an address assigned at start was held back")
	}
	r.g.synced(assigned(oldIP), nil)
	r.noCall()

	if r.g.gate(ctx, newIP6, []string{"eth1"}, false, false) {
		t.Fatal("a new address was announced before its probe")
	}
	r.g.synced(assigned(oldIP, newIP6), nil)
	if !r.g.holding(newIP6) {
		t.Error("holding = false during the probe")
	}
	c := r.call(newIP6)
	if diff := cmp.Diff([]string{"eth1"}, c.ifaces); diff != "" {
		t.Errorf("probed interfaces (-want +got):\n%s", diff)
	}
	if r.g.gate(ctx, newIP6, []string{"eth1"}, false, false) {
		t.Fatal("announced while the probe runs")
	}
	// Another speaker answering is no conflict.
	c.reply <- []net.HardwareAddr{speakerMAC}
	r.kicked()
	if !r.g.gate(ctx, newIP6, []string{"eth1"}, false, false) {
		t.Fatal("held back after a probe only a speaker answered")
	}
	r.g.synced(assigned(oldIP, newIP6), nil)
	if r.g.holding(newIP6) || !r.g.gate(ctx, newIP6, nil, false, false) || !r.g.gate(ctx, oldIP, nil, false, false) {
		t.Error("an announced address is held back again")
	}
	r.noCall()
	var h dto.Metric
	if err := r.g.metrics.probes.Write(&h); err != nil || h.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("probe histogram has %d samples (%v), want 1", h.GetHistogram().GetSampleCount(), err)
	}
	if len(r.reported()) != 0 {
		t.Errorf("conflicts reported: %v", r.reported())
	}

	// Released, then assigned again (to another Service): probed again.
	r.g.synced(assigned(oldIP), nil)
	if r.g.gate(ctx, newIP6, nil, false, false) {
		t.Error("a re-assigned address was announced without a probe")
	}
	r.call(newIP6).reply <- nil
	r.kicked()
	if !r.g.gate(ctx, newIP6, nil, false, false) {
		t.Error("held back after a probe nobody answered")
	}
}

// TestProbeGuardTakeover: a failover or handover is never probed.
func TestProbeGuardTakeover(t *testing.T) {
	synctest.Test(t, testProbeGuardTakeover)
}

func testProbeGuardTakeover(t *testing.T) {
	r := newGuardRig(t)
	r.g.synced(nil, nil)
	s := &Speaker{opts: Options{NodeName: "n1"}, owners: map[netip.Addr]string{newIP: "n2"}, probes: r.g}
	if !s.probeGate(t.Context(), newIP, nil, nil) {
		t.Error("a takeover from n2 was held back")
	}
	s.owners[newIP6] = ""
	if s.probeGate(t.Context(), newIP6, nil, nil) {
		t.Error("an address nobody could announce before was not probed")
	}
	r.call(newIP6).reply <- nil
	r.noCall()
	// A probe overtaken by a takeover stops.
	if s.probeGate(t.Context(), oldIP, nil, nil) {
		t.Fatal("a new address was not probed")
	}
	c := r.call(oldIP)
	s.owners[oldIP] = "n3"
	if !s.probeGate(t.Context(), oldIP, nil, nil) {
		t.Error("held back after a takeover")
	}
	<-c.ctx.Done()
	if r.g.holding(oldIP) {
		t.Error("still holding after a takeover")
	}
	// Without a prober, nothing is held back.
	if !(&Speaker{owners: map[netip.Addr]string{}}).probeGate(t.Context(), newIP, nil, nil) {
		t.Error("held back without a prober")
	}
}

// TestProbeGuardConflict: a host answering holds the address back, with
// one Event and one count per distinct MAC however often it answers, the
// conflict visible through conflicts() and the gauge, until a probe finds
// the address free.
func TestProbeGuardConflict(t *testing.T) {
	synctest.Test(t, testProbeGuardConflict)
}

func testProbeGuardConflict(t *testing.T) {
	r := newGuardRig(t)
	ctx := t.Context()
	r.g.synced(nil, nil)
	if r.g.gate(ctx, newIP, nil, false, false) {
		t.Fatal("announced before the probe")
	}
	for i, answer := range [][]net.HardwareAddr{{hostMAC}, {speakerMAC, hostMAC}, {hostMAC}, {host2MAC}} {
		r.call(newIP).reply <- answer
		if i == 0 {
			r.kicked()
		}
		foreign := answer[len(answer)-1]
		waitUntil(t, "the conflict is recorded", func() bool { return r.g.conflicts()[newIP].String() == foreign.String() })
		if r.g.gate(ctx, newIP, nil, false, false) {
			t.Fatalf("announced during the conflict (answer %d)", i)
		}
		r.g.synced(assigned(newIP), nil)
	}
	// The next re-probe comes after the last answer was fully handled.
	last := r.call(newIP)
	want := []string{newIP.String() + " " + hostMAC.String(), newIP.String() + " " + host2MAC.String()}
	if diff := cmp.Diff(want, r.reported()); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[netip.Addr]net.HardwareAddr{newIP: host2MAC}, r.g.conflicts()); diff != "" {
		t.Errorf("conflicts (-want +got):\n%s", diff)
	}
	if got := value(t, r.g.metrics.addressConflicts.WithLabelValues(newIP.String())); got != 2 {
		t.Errorf("conflicts counted %v, want 2", got)
	}
	if got := value(t, r.g.metrics.heldBack); got != 1 {
		t.Errorf("held-back gauge %v, want 1", got)
	}

	// The host releases the address.
	last.reply <- nil
	r.kicked()
	if len(r.g.conflicts()) != 0 {
		t.Errorf("conflicts after the address came free: %v", r.g.conflicts())
	}
	if !r.g.gate(ctx, newIP, nil, false, false) {
		t.Fatal("held back after the address came free")
	}
	r.g.synced(assigned(newIP), nil)
	if got := value(t, r.g.metrics.heldBack); got != 0 {
		t.Errorf("held-back gauge %v, want 0", got)
	}
	r.noCall()
}

// TestProbeGuardAbandoned: a probe or conflict for an address this node
// no longer announces (unassigned, elected elsewhere, isolated) stops.
func TestProbeGuardAbandoned(t *testing.T) {
	synctest.Test(t, testProbeGuardAbandoned)
}

func testProbeGuardAbandoned(t *testing.T) {
	r := newGuardRig(t)
	ctx := t.Context()
	r.g.synced(nil, nil)
	r.g.gate(ctx, newIP, nil, false, false)
	r.g.synced(assigned(newIP), nil)
	r.call(newIP).reply <- []net.HardwareAddr{hostMAC}
	waitUntil(t, "the conflict is recorded", func() bool { return len(r.g.conflicts()) == 1 })
	c := r.call(newIP)               // the re-probe
	r.g.synced(assigned(newIP), nil) // not gated: elected elsewhere
	<-c.ctx.Done()
	if r.g.holding(newIP) || len(r.g.conflicts()) != 0 {
		t.Error("an abandoned address is still held")
	}
	if got := value(t, r.g.metrics.heldBack); got != 0 {
		t.Errorf("held-back gauge %v, want 0", got)
	}
	r.noCall()
}

func TestConflictBackoff(t *testing.T) {
	for n, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30, 30} {
		want *= time.Second
		for range 50 {
			if d := conflictBackoff(n); d < want-want/5 || d > want+want/5 {
				t.Fatalf("conflictBackoff(%d) = %v, want %v ±20 %%", n, d, want)
			}
		}
	}
	if d := conflictBackoff(1000); d > conflictBackoffMax+conflictBackoffMax/5 {
		t.Errorf("conflictBackoff(1000) = %v", d)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// value reads a gauge or counter.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.GetGauge().GetValue()
	}
	return d.GetCounter().GetValue()
}

// TestProbeGuardRestartInConflict: a speaker starting while a Service's
// status says its address was held back for a conflict probes that
// address instead of announcing it as one served before; the Service's
// other address, and other Services' addresses, are announced at once.
func TestProbeGuardRestartInConflict(t *testing.T) {
	synctest.Test(t, testProbeGuardRestartInConflict)
}

func testProbeGuardRestartInConflict(t *testing.T) {
	r := newGuardRig(t)
	svc := func(msg string, status metav1.ConditionStatus, reason string, ips ...string) *corev1.Service {
		s := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
		s.Status.Conditions = []metav1.Condition{{Type: api.ConditionAnnounced, Status: status, Reason: reason, Message: msg}}
		return s
	}
	held := svc("198.51.100.101 is in use by MAC 02:aa:00:00:00:01", metav1.ConditionFalse, api.ReasonAddressConflict, "198.51.100.101", "2001:db8:100::101")
	vague := svc("an address is in use on the LAN", metav1.ConditionFalse, api.ReasonAddressConflict, "198.51.100.102")
	for _, tc := range []struct {
		svc  *corev1.Service
		ip   string
		want bool
	}{
		{held, "198.51.100.101", true},
		{held, "2001:db8:100::101", false},
		{vague, "198.51.100.102", true},
		{svc("198.51.100.100 by n1", metav1.ConditionTrue, api.ReasonAnnounced, "198.51.100.100"), "198.51.100.100", false},
		{svc("198.51.100.100", metav1.ConditionFalse, api.ReasonDuplicateAnnouncer, "198.51.100.100"), "198.51.100.100", false},
	} {
		if got := heldForConflict(tc.svc, netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("heldForConflict(%s, %q) = %v, want %v", tc.ip, tc.svc.Status.Conditions[0].Message, got, tc.want)
		}
	}

	s := &Speaker{opts: Options{NodeName: "n1"}, owners: map[netip.Addr]string{}, probes: r.g}
	users := map[netip.Addr][]*corev1.Service{newIP: {held}, newIP6: {held}, oldIP: {svc("", metav1.ConditionTrue, api.ReasonAnnounced, oldIP.String())}}
	if s.probeGate(t.Context(), newIP, nil, users[newIP]) {
		t.Error("an address held for a conflict before the restart was announced without a probe")
	}
	if !s.probeGate(t.Context(), newIP6, nil, users[newIP6]) || !s.probeGate(t.Context(), oldIP, nil, users[oldIP]) {
		t.Error("an address served before the restart was held back")
	}
	s.probesSynced(assigned(newIP, newIP6, oldIP), users)
	r.call(newIP).reply <- []net.HardwareAddr{hostMAC}
	waitUntil(t, "the conflict is recorded", func() bool { return len(s.Conflicts()) == 1 })
	if diff := cmp.Diff(map[netip.Addr]net.HardwareAddr{newIP: hostMAC}, s.Conflicts()); diff != "" {
		t.Errorf("Conflicts (-want +got):\n%s", diff)
	}
}
