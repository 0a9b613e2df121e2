package speaker

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	kevents "k8s.io/client-go/tools/events"

	evrec "github.com/ironlb/ironlb/api/recorder"
	"github.com/ironlb/ironlb/speaker/election"
)

func lbSvc(name, ip string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{
			Ingress: []corev1.LoadBalancerIngress{{IP: ip}}}},
	}
}

// dupSpeaker is a Speaker with just what DuplicateAnnouncer uses: a
// Service lister over a plain indexer, a fake Event recorder, metrics, and
// a MAC directory.
func dupSpeaker(t *testing.T, node string, macs map[string]string, svcs ...*corev1.Service) (*Speaker, *kevents.FakeRecorder) {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, svc := range svcs {
		if err := idx.Add(svc); err != nil {
			t.Fatal(err)
		}
	}
	rec := kevents.NewFakeRecorder(100)
	s := &Speaker{
		opts:     Options{NodeName: node, MACOwner: func(m net.HardwareAddr) string { return macs[m.String()] }},
		services: corelisters.NewServiceLister(idx), recorder: evrec.From(rec), metrics: NewMetrics(),
		kick: make(chan struct{}, 1), yields: map[netip.Addr]time.Time{}, splits: map[netip.Addr]split{},
		dupReported: map[dupKey]time.Time{},
		drains:      map[netip.Addr]drain{}, handovers: map[netip.Addr]handover{},
	}
	return s, rec
}

func events(rec *kevents.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestDuplicateAnnouncerForeignHost(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.100")
	foreign, _ := net.ParseMAC("02:1b:00:00:00:99")
	a, b := lbSvc("a", ip.String()), lbSvc("b", ip.String())
	a.UID, b.UID = "uid-a", "uid-b"
	s, rec := dupSpeaker(t, "n1", nil, a, b, lbSvc("other", "198.51.100.101"))
	ctx := context.Background()

	s.DuplicateAnnouncer(ctx, ip, foreign)
	evs := events(rec)
	if len(evs) != 2 {
		t.Fatalf("got Events %q, want one on each of the two Services using %s", evs, ip)
	}
	for _, e := range evs {
		if !strings.HasPrefix(e, "Warning DuplicateAnnouncer ") || !strings.Contains(e, foreign.String()) ||
			!strings.Contains(e, "not an ironlb speaker") || !strings.Contains(e, `node "n1" keeps announcing`) {
			t.Errorf("Event %q: want a Warning DuplicateAnnouncer naming %s as foreign and n1 defending", e, foreign)
		}
	}
	// Rate-limited per address and MAC: more claims count, but raise no
	// Event until the interval is over...
	for range 5 {
		s.DuplicateAnnouncer(ctx, ip, foreign)
	}
	if evs := events(rec); len(evs) != 0 {
		t.Errorf("claims within %v raised %d more Events", duplicateReportEvery, len(evs))
	}
	var m dto.Metric
	if err := s.metrics.duplicates.WithLabelValues(ip.String()).Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 6 {
		t.Errorf("ironlb_speaker_duplicate_announcer_total{address=%q} = %v, want 6", ip, got)
	}
	// ...except for a Service that starts using the address meanwhile,
	// once the lookup interval is over...
	age := func(d time.Duration) {
		s.dupMu.Lock()
		defer s.dupMu.Unlock()
		for k, at := range s.dupReported {
			s.dupReported[k] = at.Add(-d)
		}
	}
	c := lbSvc("c", ip.String())
	c.UID = "uid-c"
	all, _ := s.services.List(labels.Everything())
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, svc := range append(all, c) {
		if err := idx.Add(svc); err != nil {
			t.Fatal(err)
		}
	}
	s.services = corelisters.NewServiceLister(idx)
	age(duplicateLookupEvery)
	s.DuplicateAnnouncer(ctx, ip, foreign)
	if evs := events(rec); len(evs) != 1 || !strings.Contains(evs[0], foreign.String()) {
		t.Errorf("new Service within the interval: Events %q, want one", evs)
	}
	// ...and the interval over, the next claim reports on all of them.
	age(duplicateReportEvery)
	s.DuplicateAnnouncer(ctx, ip, foreign)
	if evs := events(rec); len(evs) != 3 {
		t.Errorf("after the interval: %d Events, want 3", len(evs))
	}
	// A foreign claim never makes this node stop.
	s.mu.Lock()
	defer s.mu.Unlock()
	if y, _ := s.yielded(ip, time.Now()); y {
		t.Error("yielding to a foreign host")
	}
}

func TestDuplicateAnnouncerOtherSpeaker(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.100")
	// Whichever of n1 and n2 wins the pairwise election for ip.
	winner := election.Owner(ip, []string{"n1", "n2"})
	loser := map[string]string{"n1": "n2", "n2": "n1"}[winner]
	macOf := map[string]string{"n1": "02:00:c6:33:64:0b", "n2": "02:00:c6:33:64:0c"}
	macs := map[string]string{macOf["n1"]: "n1", macOf["n2"]: "n2"}
	wmac, _ := net.ParseMAC(macOf[winner])
	lmac, _ := net.ParseMAC(macOf[loser])
	ctx := context.Background()

	// A split brain: each has lost the other. The winner hears the loser
	// and keeps the address.
	w, wrec := dupSpeaker(t, winner, macs, lbSvc("a", ip.String()))
	w.members = []string{winner}
	w.DuplicateAnnouncer(ctx, ip, lmac)
	if evs := events(wrec); len(evs) != 1 || !strings.Contains(evs[0], `of node "`+loser+`"`) || !strings.Contains(evs[0], "re-announces") {
		t.Errorf("winner's Events %q: want one naming node %s and saying %s re-announces", evs, loser, winner)
	}
	if y, _ := w.yielded(ip, time.Now()); y {
		t.Errorf("%s, the pairwise owner, stopped announcing", winner)
	}

	// The loser hears the winner: it stops, and its sync loop is kicked.
	l, lrec := dupSpeaker(t, loser, macs, lbSvc("a", ip.String()))
	l.members = []string{loser}
	l.DuplicateAnnouncer(ctx, ip, wmac)
	if evs := events(lrec); len(evs) != 1 || !strings.Contains(evs[0], `of node "`+winner+`"`) || !strings.Contains(evs[0], "stops announcing") {
		t.Errorf("loser's Events %q: want one naming node %s and saying %s stops", evs, winner, loser)
	}
	if y, until := l.yielded(ip, time.Now()); !y || time.Until(until) > yieldFor {
		t.Errorf("%s yielded = %v until %v, want true for at most %v", loser, y, until, yieldFor)
	}
	select {
	case <-l.kick:
	default:
		t.Error("sync loop not kicked")
	}
	// Bounded: after yieldFor it trusts its own election again...
	if y, _ := l.yielded(ip, time.Now().Add(yieldFor)); y {
		t.Errorf("still yielding after %v", yieldFor)
	}
	// ...and a membership change ends it at once.
	l.DuplicateAnnouncer(ctx, ip, wmac)
	l.MembersChanged([]string{loser, winner})
	if y, _ := l.yielded(ip, time.Now()); y {
		t.Error("still yielding after a membership change")
	}

	// A claim in the name of a speaker this node sees alive is not a
	// split brain (both compute the same election): possibly a forged
	// frame, so even the pairwise loser keeps defending.
	f, frec := dupSpeaker(t, loser, macs, lbSvc("a", ip.String()))
	f.members = []string{"n1", "n2"}
	f.DuplicateAnnouncer(ctx, ip, wmac)
	if y, _ := f.yielded(ip, time.Now()); y {
		t.Errorf("%s stopped for a claim in the name of %s, which it sees alive", loser, winner)
	}
	if evs := events(frec); len(evs) != 1 || !strings.Contains(evs[0], "sees alive") || !strings.Contains(evs[0], "keeps announcing") {
		t.Errorf("Events %q: want one saying the claimant is alive and %s keeps defending", evs, loser)
	}
}

func TestYieldsTo(t *testing.T) {
	ip := netip.MustParseAddr("2001:db8:100::100")
	for _, pair := range [][2]string{{"n1", "n2"}, {"n2", "n3"}, {"n1", "n3"}} {
		a, b := pair[0], pair[1]
		// Each has lost the other: exactly one of the two yields,
		// whichever asks.
		if yieldsTo(a, b, []string{a}, ip) == yieldsTo(b, a, []string{b}, ip) {
			t.Errorf("%s and %s: yieldsTo gives %v both ways", a, b, yieldsTo(a, b, []string{a}, ip))
		}
		// Both alive in the asker's view: neither yields.
		if yieldsTo(a, b, []string{a, b}, ip) || yieldsTo(b, a, []string{a, b}, ip) {
			t.Errorf("%s and %s: yielding to a speaker seen alive", a, b)
		}
	}
	if yieldsTo("n1", "", nil, ip) || yieldsTo("n1", "n1", nil, ip) {
		t.Error("yielding to a foreign host or to itself")
	}
}

// TestSettleSplits: the winner of a split brain re-announces every
// reannounceEvery until the two see each other again or the loser has
// been quiet for splitHold; the loser watches the address while it yields.
func TestSettleSplits(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.100")
	winner := election.Owner(ip, []string{"n1", "n2"})
	loser := map[string]string{"n1": "n2", "n2": "n1"}[winner]
	macs := map[string]string{"02:00:c6:33:64:0b": "n1", "02:00:c6:33:64:0c": "n2"}
	macOf := map[string]string{"n1": "02:00:c6:33:64:0b", "n2": "02:00:c6:33:64:0c"}
	ctx := context.Background()
	mine := map[netip.Addr][]string{ip: nil}

	w, _ := dupSpeaker(t, winner, macs)
	w.members = []string{winner}
	lmac, _ := net.ParseMAC(macOf[loser])
	w.DuplicateAnnouncer(ctx, ip, lmac)
	t0 := time.Now()
	// The responder leaves claims by speakers alone: the winner of a
	// split brain re-announces at once, then every reannounceEvery.
	watch, re, next := w.settleSplits(t0, mine)
	if len(watch) != 0 || len(re) != 1 || next.Sub(t0) > reannounceEvery {
		t.Errorf("winner right after the claim: watch %v, re-announce %v, next in %v; want %s now, next within %v", watch, re, next.Sub(t0), ip, reannounceEvery)
	}
	// More claims do not push the next reminder back.
	w.DuplicateAnnouncer(ctx, ip, lmac)
	if _, re, _ := w.settleSplits(t0.Add(time.Millisecond), mine); len(re) != 0 {
		t.Errorf("re-announced %v again right away", re)
	}
	if _, re, _ := w.settleSplits(t0.Add(reannounceEvery), mine); len(re) != 1 || re[0] != ip {
		t.Errorf("winner after %v: re-announce %v, want %s", reannounceEvery, re, ip)
	}
	if _, re, _ := w.settleSplits(t0.Add(reannounceEvery+time.Millisecond), map[netip.Addr][]string{}); len(re) != 0 {
		t.Errorf("re-announcing %v, no longer owned", re)
	}
	if _, _, next := w.settleSplits(t0.Add(splitHold+time.Second), mine); !next.IsZero() || len(w.splits) != 0 {
		t.Errorf("split brain kept %v after the loser's last claim (next %v)", splitHold, next)
	}
	w.DuplicateAnnouncer(ctx, ip, lmac)
	w.MembersChanged([]string{"n1", "n2"})
	if len(w.splits) != 0 {
		t.Error("split brain kept once the two see each other again")
	}

	// A speaker seen alive (most likely taking the address over) gets
	// reannounceEvery before the first reminder.
	a, _ := dupSpeaker(t, winner, macs)
	a.members = []string{"n1", "n2"}
	a.DuplicateAnnouncer(ctx, ip, lmac)
	t1 := time.Now()
	if _, re, next := a.settleSplits(t1, mine); len(re) != 0 || next.Sub(t1) > reannounceEvery {
		t.Errorf("claim by a live speaker: re-announce %v at once (next in %v), want the first after %v", re, next.Sub(t1), reannounceEvery)
	}
	if _, re, _ := a.settleSplits(t1.Add(reannounceEvery), mine); len(re) != 1 {
		t.Errorf("claim by a live speaker: no reminder after %v", reannounceEvery)
	}

	l, _ := dupSpeaker(t, loser, macs)
	l.members = []string{loser}
	wmac, _ := net.ParseMAC(macOf[winner])
	l.DuplicateAnnouncer(ctx, ip, wmac)
	watch, re, next = l.settleSplits(time.Now(), map[netip.Addr][]string{})
	if len(watch) != 1 || watch[0] != ip || len(re) != 0 || time.Until(next) > yieldFor {
		t.Errorf("loser: watch %v, re-announce %v, next in %v; want %s watched until the yield ends", watch, re, time.Until(next), ip)
	}
	if len(l.splits) != 0 {
		t.Errorf("the loser recorded a won split brain: %v", l.splits)
	}
}
