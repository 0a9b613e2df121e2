package speaker

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
)

func TestReannounceRoundTrip(t *testing.T) {
	ip := netip.MustParseAddr("2001:db8:100::10")
	got, from, reason, err := decodeReannounce(encodeReannounce(ip, "n2", api.EventNotAnswering))
	if err != nil || got != ip || from != "n2" || reason != api.EventNotAnswering {
		t.Fatalf("round trip: %v %q %q %v", got, from, reason, err)
	}
	for _, bad := range []string{"", "{}", `{"kind":"other","ip":"198.51.100.1"}`, `{"kind":"reannounce","ip":"nope"}`,
		`{"kind":"reannounce","ip":"fe80::1%eth0"}`, `{"kind":"reannounce","ip":"198.51.100.1"` + strings.Repeat(" ", maxMsgLen) + `}`} {
		if _, _, _, err := decodeReannounce([]byte(bad)); err == nil {
			t.Errorf("decodeReannounce(%.40q) accepted", bad)
		}
	}
}

func FuzzDecodeReannounce(f *testing.F) {
	f.Add(encodeReannounce(netip.MustParseAddr("198.51.100.10"), "n1", api.EventWrongAnnouncer))
	f.Add([]byte(`{"kind":"reannounce","ip":"::ffff:198.51.100.1"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, from, reason, err := decodeReannounce(b)
		if err != nil {
			return
		}
		if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
			t.Fatalf("decodeReannounce(%q) = %v", b, ip)
		}
		again, f2, r2, err := decodeReannounce(encodeReannounce(ip, from, reason))
		if err != nil && len(from)+len(reason) < maxMsgLen/4 {
			t.Fatalf("re-encoding %v %q %q: %v", ip, from, reason, err)
		}
		if err == nil && (again != ip || f2 != from || r2 != reason) {
			t.Fatalf("round trip changed %v %q %q to %v %q %q", ip, from, reason, again, f2, r2)
		}
	})
}

// recoverAnnouncer counts Recover calls.
type recoverAnnouncer struct {
	mu  sync.Mutex
	ips []netip.Addr
}

func (r *recoverAnnouncer) SetOwned(map[netip.Addr][]string) {}
func (r *recoverAnnouncer) Recover(ip netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ips = append(r.ips, ip)
	return nil
}
func (r *recoverAnnouncer) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ips)
}

// TestCheckRound: a check answered by the owner's MAC is fine; nobody
// answering twice, or only another MAC, raises one Event per address and
// tells the owner; one lost answer is not an alarm; addresses this node
// owns, that just moved, or whose owner is dead are not checked.
func TestCheckRound(t *testing.T) {
	synctest.Test(t, testCheckRound)
}

func testCheckRound(t *testing.T) {
	ok4, silent, wrong, flaky, mine, fresh, deadOwner := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"),
		netip.MustParseAddr("198.51.100.3"), netip.MustParseAddr("198.51.100.4"), netip.MustParseAddr("198.51.100.5"),
		netip.MustParseAddr("198.51.100.6"), netip.MustParseAddr("198.51.100.7")
	macs := map[string]string{"02:00:00:00:00:02": "n2", "02:00:00:00:00:03": "n3"}
	n2mac, _ := net.ParseMAC("02:00:00:00:00:02")
	n3mac, _ := net.ParseMAC("02:00:00:00:00:03")
	var svcs = []string{"ok", "silent", "wrong", "flaky", "mine", "fresh", "dead"}
	held := netip.MustParseAddr("198.51.100.8")
	heldSvc := lbSvc("held", held.String())
	heldSvc.Status.Conditions = []metav1.Condition{{Type: api.ConditionAnnounced, Status: metav1.ConditionFalse, Reason: api.ReasonAddressConflict,
		Message: "address 198.51.100.8 is in use on the LAN by MAC 02:bb:00:00:00:01"}}
	s, rec := dupSpeaker(t, "n1", macs,
		lbSvc(svcs[0], ok4.String()), lbSvc(svcs[1], silent.String()), lbSvc(svcs[2], wrong.String()),
		lbSvc(svcs[3], flaky.String()), lbSvc(svcs[4], mine.String()), lbSvc(svcs[5], fresh.String()), lbSvc(svcs[6], deadOwner.String()), heldSvc)
	s.members = []string{"n1", "n2", "n3"}
	long := time.Now().Add(-time.Minute)
	s.checkable = map[netip.Addr]checkState{
		ok4: {owner: "n2", since: long}, silent: {owner: "n2", since: long}, wrong: {owner: "n2", since: long},
		flaky: {owner: "n2", since: long}, mine: {owner: "n1", since: long}, fresh: {owner: "n2", since: time.Now()},
		deadOwner: {owner: "n4", since: long}, held: {owner: "n2", since: long},
	}
	var mu sync.Mutex
	asked := map[netip.Addr]int{}
	s.opts.Check = func(_ context.Context, ip netip.Addr, _ []string) ([]net.HardwareAddr, error) {
		mu.Lock()
		defer mu.Unlock()
		asked[ip]++
		switch ip {
		case silent:
			return nil, nil
		case wrong:
			return []net.HardwareAddr{n3mac}, nil
		case flaky:
			if asked[ip] == 1 {
				return nil, nil
			}
		}
		return []net.HardwareAddr{n2mac}, nil
	}
	var told []string
	s.opts.AskOwner = func(node string, msg []byte) error {
		ip, from, reason, err := decodeReannounce(msg)
		if err != nil || from != "n1" {
			t.Errorf("message to %s: %q, %v", node, msg, err)
		}
		told = append(told, node+" "+ip.String()+" "+reason)
		return nil
	}
	reported := map[netip.Addr]time.Time{}
	s.checkRound(context.Background(), 100, reported)

	for _, ip := range []netip.Addr{mine, fresh, deadOwner, held} {
		if asked[ip] != 0 {
			t.Errorf("%s checked %d times, want never", ip, asked[ip])
		}
	}
	if asked[ok4] != 1 || asked[flaky] != 2 || asked[silent] != 2 {
		t.Errorf("checks: ok %d, flaky %d, silent %d; want 1, 2, 2", asked[ok4], asked[flaky], asked[silent])
	}
	evs := events(rec)
	if len(evs) != 2 {
		t.Fatalf("Events %q, want one NotAnswering and one WrongAnnouncer", evs)
	}
	joined := strings.Join(evs, "\n")
	if !strings.Contains(joined, "Warning "+api.EventNotAnswering) || !strings.Contains(joined, "Warning "+api.EventWrongAnnouncer) ||
		!strings.Contains(joined, "02:00:00:00:00:03 (node n3)") {
		t.Errorf("Events %q", evs)
	}
	if len(told) != 2 {
		t.Errorf("owners told %q, want two messages to n2", told)
	}
	// The next round does not repeat the Events within checkReportEvery.
	s.checkRound(context.Background(), 100, reported)
	if evs := events(rec); len(evs) != 0 {
		t.Errorf("repeated Events %q", evs)
	}

	// The owner's side: a request for an address it announces is acted
	// on once per reannounceRequestEvery; others are ignored.
	ra := &recoverAnnouncer{}
	o, _ := dupSpeaker(t, "n2", macs)
	o.announcer = ra
	o.requested = map[netip.Addr]time.Time{}
	o.announcing = map[netip.Addr][]string{silent: nil}
	ctx := context.Background()
	o.HandleMessage(ctx, encodeReannounce(silent, "n1", api.EventNotAnswering))
	o.HandleMessage(ctx, encodeReannounce(silent, "n3", api.EventNotAnswering))
	o.HandleMessage(ctx, encodeReannounce(ok4, "n1", api.EventNotAnswering))
	o.HandleMessage(ctx, []byte("garbage"))
	deadline := time.Now().Add(5 * time.Second)
	for ra.count() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	synctest.Wait()
	if n := ra.count(); n != 1 {
		t.Errorf("Recover called %d times, want once", n)
	}
}
