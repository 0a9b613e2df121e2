package speaker

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/speaker/election"
)

// TestDrainLifecycle: the node that hands an address to a live speaker
// keeps answering until it hears that speaker announce it, and no longer
// than the bound; a failover, a change of heart or a dead new owner end
// the drain at once.
func TestDrainLifecycle(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.100")
	now := time.Now()
	macs := map[string]string{"02:00:c6:33:64:0b": "n1", "02:00:c6:33:64:0c": "n2", "02:00:c6:33:64:0d": "n3"}
	n2mac, _ := net.ParseMAC("02:00:c6:33:64:0c")
	n3mac, _ := net.ParseMAC("02:00:c6:33:64:0d")
	all := []string{"n1", "n2", "n3"}
	newSpeaker := func() *Speaker {
		s, _ := dupSpeaker(t, "n1", macs, lbSvc("a", ip.String()))
		s.opts.LocalServingWait = 5 * time.Second
		return s
	}

	s := newSpeaker()
	// The election moves ip from n1 (this node) to n2, which is alive.
	d, until := s.draining(ip, true, "n2", all, now)
	if !d || until.Sub(now) != 5*time.Second+drainSlack {
		t.Fatalf("handover to a live speaker: draining = %v until +%v, want true until +%v", d, until.Sub(now), 5*time.Second+drainSlack)
	}
	// The next sync has n2 on record as the previous owner: still draining.
	if d, _ := s.draining(ip, false, "n2", all, now.Add(time.Second)); !d {
		t.Fatal("drain ended on the next sync")
	}
	// A claim by a third speaker does not end it, and is no duplicate.
	s.DuplicateAnnouncer(context.Background(), ip, n3mac)
	if _, ok := s.drains[ip]; !ok {
		t.Fatal("a claim by a speaker other than the new owner ended the drain")
	}
	// n2 announces: the drain ends, the sync loop is kicked, and nothing
	// is reported as a duplicate announcer.
	s.DuplicateAnnouncer(context.Background(), ip, n2mac)
	select {
	case <-s.kick:
	default:
		t.Error("sync loop not kicked when the new owner was heard")
	}
	// The sync that follows still finds ip among the addresses it gave
	// the announcer last time; that is the end of the drain, not a new
	// one.
	if d, _ := s.draining(ip, true, "n2", all, now.Add(time.Second)); d {
		t.Fatal("still draining after the new owner was heard")
	}
	if _, ok := s.drains[ip]; ok {
		t.Fatal("drain kept after the sync that ended it")
	}
	// More announcements by n2 change nothing.
	s.DuplicateAnnouncer(context.Background(), ip, n2mac)
	if d, _ := s.draining(ip, false, "n2", all, now.Add(2*time.Second)); d {
		t.Fatal("draining again after the new owner was heard")
	}
	if n := dupCount(t, s, ip); n != 0 {
		t.Errorf("duplicate announcer counted %v claims during a handover, want 0", n)
	}
	if len(s.splits) != 0 || len(s.yields) != 0 {
		t.Errorf("split-brain state during a handover: splits %v yields %v", s.splits, s.yields)
	}

	for _, tc := range []struct {
		name       string
		announcing bool
		owner      string
		members    []string
		at         time.Duration
		startFirst bool // a drain to n2 is already on
		want       bool
	}{
		{"failover: the address came to this node", false, "n1", all, 0, false, false},
		{"new owner dead (failover to it fails)", true, "n2", []string{"n1", "n3"}, 0, false, false},
		{"no owner left", true, "", all, 0, false, false},
		{"bound reached", true, "n2", all, 5*time.Second + drainSlack, true, false},
		{"just inside the bound", true, "n2", all, 5*time.Second + drainSlack - time.Millisecond, true, true},
		{"the election moved it on to n3", true, "n3", all, time.Second, true, false},
		{"the new owner died during the drain", true, "n2", []string{"n1", "n3"}, time.Second, true, false},
		{"not announced here (a lost split brain, a wait)", false, "n2", all, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSpeaker()
			if tc.startFirst {
				if d, _ := s.draining(ip, true, "n2", all, now); !d {
					t.Fatal("drain did not start")
				}
			}
			if d, _ := s.draining(ip, tc.announcing, tc.owner, tc.members, now.Add(tc.at)); d != tc.want {
				t.Errorf("draining = %v, want %v", d, tc.want)
			}
			if _, ok := s.drains[ip]; ok != tc.want {
				t.Errorf("drain recorded = %v, want %v", ok, tc.want)
			}
		})
	}
}

// TestHandoverClaimsAreExpected: the new owner hears the old one's last
// answers during the drain; within the window they are neither counted nor
// reported, and after it, or from another speaker, they are.
func TestHandoverClaimsAreExpected(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.100")
	macs := map[string]string{"02:00:c6:33:64:0b": "n1", "02:00:c6:33:64:0c": "n2", "02:00:c6:33:64:0d": "n3"}
	n1mac, _ := net.ParseMAC("02:00:c6:33:64:0b")
	n3mac, _ := net.ParseMAC("02:00:c6:33:64:0d")
	s, rec := dupSpeaker(t, "n2", macs, lbSvc("a", ip.String()))
	s.members = []string{"n1", "n2", "n3"}
	s.handovers[ip] = handover{from: "n1", until: time.Now().Add(time.Minute)}

	s.DuplicateAnnouncer(context.Background(), ip, n1mac)
	if evs := events(rec); len(evs) != 0 {
		t.Errorf("Events for the draining previous owner: %q", evs)
	}
	if n := dupCount(t, s, ip); n != 0 {
		t.Errorf("duplicates counted for the draining previous owner: %v", n)
	}
	s.DuplicateAnnouncer(context.Background(), ip, n3mac)
	if evs := events(rec); len(evs) != 1 {
		t.Errorf("a claim by n3 during n1's drain: Events %q, want one", evs)
	}
	s.handovers[ip] = handover{from: "n1", until: time.Now().Add(-time.Millisecond)}
	s.dupReported = map[dupKey]time.Time{}
	s.DuplicateAnnouncer(context.Background(), ip, n1mac)
	if evs := events(rec); len(evs) != 1 {
		t.Errorf("a claim by n1 after the handover window: Events %q, want one", evs)
	}
}

func dupCount(t *testing.T, s *Speaker, ip netip.Addr) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.metrics.duplicates.WithLabelValues(ip.String()).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestRetryInKeepsTheEarliest: a sync asks for several retries; the
// earliest must stand, or a split brain's 2 s reminder waits for a
// condition's 10 s expiry.
func TestRetryInKeepsTheEarliest(t *testing.T) {
	synctest.Test(t, testRetryInKeepsTheEarliest)
}

func testRetryInKeepsTheEarliest(t *testing.T) {
	s := &Speaker{kick: make(chan struct{}, 1)}
	s.retryIn(50 * time.Millisecond)
	s.retryIn(time.Hour)
	select {
	case <-s.kick:
	case <-time.After(2 * time.Second):
		t.Fatal("the earlier retry was dropped for a later one")
	}
	// Once it has fired, a later one is taken.
	s.retryIn(20 * time.Millisecond)
	select {
	case <-s.kick:
	case <-time.After(2 * time.Second):
		t.Fatal("no retry after the first fired")
	}
	s.retry.Stop()
}

// TestDrainTargets: the announcer learns which announced addresses drain
// and to which MACs, so that its responders end a drain on the frame that
// announces the new owner. A drain heard since the sync decided what to
// announce stays listed while the address is announced (withdrawing it
// first would make the announcer answer for it again); one whose new
// owner published no MAC is left to the sync.
func TestDrainTargets(t *testing.T) {
	ip, ip2, ip3 := netip.MustParseAddr("198.51.100.100"), netip.MustParseAddr("198.51.100.101"), netip.MustParseAddr("2001:db8:100::100")
	n2mac, _ := net.ParseMAC("02:00:c6:33:64:0c")
	n2mac2, _ := net.ParseMAC("02:00:c6:33:65:0c")
	published := map[string][]net.HardwareAddr{"n2": {n2mac, n2mac2}}
	s := &Speaker{opts: Options{NodeName: "n1", MACsOf: func(n string) []net.HardwareAddr { return published[n] }},
		drains: map[netip.Addr]drain{
			ip:  {to: "n2"},
			ip2: {to: "n3"}, // published nothing
			ip3: {to: "n2", heard: true},
		}}
	announce := map[netip.Addr][]string{ip: nil, ip2: nil, ip3: nil, netip.MustParseAddr("198.51.100.102"): nil}
	got := s.drainTargets(announce)
	want := map[netip.Addr][]net.HardwareAddr{ip: {n2mac, n2mac2}, ip3: {n2mac, n2mac2}}
	if !sameDrainTargets(got, want) {
		t.Errorf("drainTargets = %v, want %v", got, want)
	}
	// The sync that ends the heard drain no longer announces it: it is
	// withdrawn from the announcer too.
	delete(announce, ip3)
	if got := s.drainTargets(announce); !sameDrainTargets(got, map[netip.Addr][]net.HardwareAddr{ip: {n2mac, n2mac2}}) {
		t.Errorf("after the heard drain ended: drainTargets = %v", got)
	}
	if sameDrainTargets(want, map[netip.Addr][]net.HardwareAddr{ip: {n2mac}, ip3: {n2mac, n2mac2}}) {
		t.Error("sameDrainTargets ignores a changed MAC list")
	}
}

// TestDrainHeardBeforeItStarts: the new owner may announce before this
// node learns that it lost the address (its membership view a moment
// behind). A drain towards that owner starting shortly after has nothing
// to wait for: none starts, and its later announcements are expected. A
// claim by another speaker, or one heard too long before, changes nothing.
func TestDrainHeardBeforeItStarts(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.100")
	macs := map[string]string{"02:00:c6:33:64:0b": "n1", "02:00:c6:33:64:0c": "n2", "02:00:c6:33:64:0d": "n3"}
	n2mac, _ := net.ParseMAC("02:00:c6:33:64:0c")
	n3mac, _ := net.ParseMAC("02:00:c6:33:64:0d")
	all := []string{"n1", "n2", "n3"}
	for _, tc := range []struct {
		name  string
		claim net.HardwareAddr
		after time.Duration // from the claim to the sync that moves ip to n2
		want  bool          // a drain starts
	}{
		{"the new owner announced just before", n2mac, 50 * time.Millisecond, false},
		{"another speaker announced", n3mac, 50 * time.Millisecond, true},
		{"the new owner announced long before", n2mac, drainSlack, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, rec := dupSpeaker(t, "n1", macs, lbSvc("a", ip.String()))
			s.opts.LocalServingWait = 5 * time.Second
			s.members = all
			// This node still owns ip: the claim is not part of a
			// handover yet.
			s.DuplicateAnnouncer(context.Background(), ip, tc.claim)
			at := s.peerClaims[ip].at
			d, _ := s.draining(ip, true, "n2", all, at.Add(tc.after))
			if d != tc.want {
				t.Fatalf("draining = %v, want %v", d, tc.want)
			}
			if _, ok := s.drains[ip]; ok != tc.want {
				t.Errorf("drain recorded = %v, want %v", ok, tc.want)
			}
			if tc.want {
				return
			}
			// n2's next announcements are the handover's, not a
			// duplicate announcer's.
			events(rec)
			before := dupCount(t, s, ip)
			s.DuplicateAnnouncer(context.Background(), ip, n2mac)
			if n := dupCount(t, s, ip); n != before {
				t.Errorf("the new owner's later announcement counted as a duplicate (%v -> %v)", before, n)
			}
			if evs := events(rec); len(evs) != 0 {
				t.Errorf("Events for the new owner's later announcement: %q", evs)
			}
		})
	}
}

// TestReturnHandover: an owner that comes back expects claims on its
// addresses by the speaker that had them meanwhile, which drains them: after
// an isolation, the one the others elected; after a start, the one the
// Service's condition names. By no other speaker, not on an address nobody
// else announced (a fresh start), and not when its own records say who had
// the address.
func TestReturnHandover(t *testing.T) {
	macs := map[string]string{"02:00:c6:33:64:0b": "n1", "02:00:c6:33:64:0c": "n2", "02:00:c6:33:64:0d": "n3"}
	macOf := map[string]net.HardwareAddr{}
	for m, n := range macs {
		macOf[n], _ = net.ParseMAC(m)
	}
	all := []string{"n1", "n2", "n3"}
	nodes := map[string]election.Node{}
	for _, n := range all {
		nodes[n] = election.Node{Name: n, Ready: true}
	}
	ip := netip.MustParseAddr("198.51.100.100")
	a := election.Address{IP: ip}
	runnerUp := election.Owner(ip, []string{"n2", "n3"})
	bystander := map[string]string{"n2": "n3", "n3": "n2"}[runnerUp]
	now := time.Now()

	for _, tc := range []struct {
		name       string
		owners     map[netip.Addr]string // this node's record before the return
		announcing bool
		local      []string // nodes hosting the endpoint of a Local Service on ip; nil: Cluster
		announced  string   // the node the Service's condition names; "": no condition
		want       string   // the speaker whose claims are expected
	}{
		{name: "start: the condition names the node that announced it", owners: nil, announced: bystander, want: bystander},
		{name: "start: no condition (a new address: nobody drains it)"},
		{name: "start: the condition names this node", announced: "n1"},
		{name: "start: the condition names a dead node", announced: "n9"},
		{name: "end of an isolation: the record names this node", owners: map[netip.Addr]string{ip: "n1"}, want: runnerUp},
		{name: "the record names the previous owner (the owner loop handles it)", owners: map[netip.Addr]string{ip: runnerUp}, announced: runnerUp},
		{name: "already announcing", owners: map[netip.Addr]string{ip: "n1"}, announcing: true},
		{name: "Local: only the node with the endpoint could have had it", owners: map[netip.Addr]string{ip: "n1"}, local: []string{"n1", bystander}, want: bystander},
		{name: "Local: nobody else could have had it", owners: map[netip.Addr]string{ip: "n1"}, local: []string{"n1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, rec := dupSpeaker(t, "n1", macs, lbSvc("a", ip.String()))
			s.members = all
			s.owners = tc.owners
			s.announcing = map[netip.Addr][]string{}
			if tc.announcing {
				s.announcing[ip] = nil
			}
			a := a
			if tc.local != nil {
				a.Services = []election.Service{{Local: true, EndpointNodes: tc.local}}
			}
			svc := lbSvc("a", ip.String())
			if tc.announced != "" {
				svc.Status.Conditions = []metav1.Condition{{Type: api.ConditionAnnounced, Status: metav1.ConditionTrue,
					Reason: api.ReasonAnnounced, Message: api.FormatAnnouncements([]api.Announcement{{IP: ip, Node: tc.announced}})}}
			}
			s.returnHandover(a, []*corev1.Service{svc}, nodes, all, now)
			h, ok := s.handovers[ip]
			if got := h.from; got != tc.want || ok != (tc.want != "") {
				t.Fatalf("expected claims by %q (recorded %v), want %q", got, ok, tc.want)
			}
			if tc.want == "" {
				return
			}
			if d := h.until.Sub(now); d != s.drainBound()+time.Second {
				t.Errorf("expected for %v, want the drain bound and a second, %v", d, s.drainBound()+time.Second)
			}
			s.DuplicateAnnouncer(context.Background(), ip, macOf[tc.want])
			if evs, n := events(rec), dupCount(t, s, ip); len(evs) != 0 || n != 0 || len(s.splits) != 0 {
				t.Errorf("the draining speaker's claim: Events %q, %v counted, splits %v; want none", evs, n, s.splits)
			}
			other := map[string]string{"n2": "n3", "n3": "n2"}[tc.want]
			s.DuplicateAnnouncer(context.Background(), ip, macOf[other])
			if evs, n := events(rec), dupCount(t, s, ip); len(evs) != 1 || n != 1 {
				t.Errorf("a claim by %s, which had no reason to announce: Events %q, %v counted; want one of each", other, evs, n)
			}
		})
	}
}
