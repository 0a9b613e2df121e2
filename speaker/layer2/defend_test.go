package layer2

import (
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// addrEqual lets cmp compare netip.Addr, whose fields are unexported.
var addrEqual = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// conflictLog collects what OnConflict reports.
type conflictLog chan Conflict

func (l conflictLog) next(t *testing.T) Conflict {
	t.Helper()
	select {
	case c := <-l:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no conflict reported")
		return Conflict{}
	}
}

// newDefendingAnnouncer is newTestAnnouncer with the defence observable:
// no gain bursts (so every announcement seen is a defence) and a short
// defence interval.
func newDefendingAnnouncer(t *testing.T, interval time.Duration) (*Announcer, *fakeIface, conflictLog) {
	t.Helper()
	log := make(conflictLog, 16)
	fn := &fakeNet{}
	a := New(t.Context(), Options{Schedule: []time.Duration{}, Dial: fn.dial, DefendInterval: interval,
		OnConflict: func(c Conflict) { log <- c }})
	t.Cleanup(func() { a.Close() })
	if err := a.SetInterfaces([]net.Interface{testIface("eth0", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}
	return a, fn.iface("eth0"), log
}

// waitSent waits until c has sent n frames in all and returns them.
func waitSent(t *testing.T, c *fakeConn, n int) [][]byte {
	t.Helper()
	waitFor(t, "defence frames", func() bool { return len(c.sent()) >= n })
	return c.sent()
}

func TestDefendARP(t *testing.T) {
	synctest.Test(t, testDefendARP)
}

func testDefendARP(t *testing.T) {
	const interval = 200 * time.Millisecond
	a, eth0, log := newDefendingAnnouncer(t, interval)
	mac := eth0.ifi.HardwareAddr

	// The first claim is reported and defended at once with both forms of
	// gratuitous ARP, from our MAC.
	start := time.Now()
	eth0.arp.deliver(t, gratuitousARP(peerMAC, vip4)[0])
	c := log.next(t)
	want := Conflict{Addr: vip4, MAC: peerMAC, Interface: "eth0", Defended: true}
	if diff := cmp.Diff(want, c, addrEqual); diff != "" {
		t.Errorf("first conflict (-want +got):\n%s", diff)
	}
	wantFrames := summarize(gratuitousARP(mac, vip4), summarizeARP)
	if diff := cmp.Diff(wantFrames, summarize(waitSent(t, eth0.arp, 2), summarizeARP)); diff != "" {
		t.Errorf("defence (-want +got):\n%s", diff)
	}

	// Claims inside the interval are reported but not defended at once...
	for range 3 {
		eth0.arp.deliver(t, gratuitousARP(peerMAC, vip4)[1])
		if c := log.next(t); c.Defended {
			t.Errorf("claim within the interval was defended at once: %+v", c)
		}
	}
	if n := len(eth0.arp.sent()); n != 2 && time.Since(start) < interval {
		t.Errorf("%d frames sent within the interval, want the first defence's 2", n)
	}
	// ...and answered by exactly one trailing defence at its end, so that
	// the last word on the wire is ours.
	sent := waitSent(t, eth0.arp, 4)
	if d := time.Since(start); d < interval {
		t.Errorf("trailing defence after %v, want no sooner than the interval %v", d, interval)
	}
	if diff := cmp.Diff(wantFrames, summarize(sent[2:], summarizeARP)); diff != "" {
		t.Errorf("trailing defence (-want +got):\n%s", diff)
	}
	time.Sleep(2 * interval)
	synctest.Wait()
	if n := len(eth0.arp.sent()); n != 4 {
		t.Errorf("%d frames sent after the claims stopped, want 4 (two defences)", n)
	}

	// The address is still served: a foreign claim never withdraws it.
	got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4))
	if len(got) != 1 || summarizeARP(got[0]).SenderMAC != mac.String() {
		t.Errorf("after the claims, a request for %s got %v, want one reply from %s", vip4, summarize(got, summarizeARP), mac)
	}

	// Quiet for an interval: the next claim is defended at once again.
	eth0.arp.deliver(t, arpRequest(peerMAC, vip4, peerIP))
	if c := log.next(t); !c.Defended {
		t.Errorf("claim after a quiet interval not defended at once: %+v", c)
	}
	waitSent(t, eth0.arp, 7) // the reply above and a third defence

	s := a.Stats().ARP
	if s.Conflicts != 5 || s.Defences != 6 {
		t.Errorf("stats: %d conflicts, %d defence frames; want 5 and 6", s.Conflicts, s.Defences)
	}
}

func TestDefendNDP(t *testing.T) {
	a, eth0, log := newDefendingAnnouncer(t, 100*time.Millisecond)
	mac := eth0.ifi.HardwareAddr
	eth0.ndp.deliver(t, unsolicitedNA(peerMAC, vip6))
	want := Conflict{Addr: vip6, MAC: peerMAC, Interface: "eth0", Defended: true}
	if diff := cmp.Diff(want, log.next(t), addrEqual); diff != "" {
		t.Errorf("conflict (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(summarize([][]byte{unsolicitedNA(mac, vip6)}, summarizeNA), summarize(waitSent(t, eth0.ndp, 1), summarizeNA)); diff != "" {
		t.Errorf("defence (-want +got):\n%s", diff)
	}
	if s := a.Stats().NDP; s.Conflicts != 1 || s.Defences != 1 {
		t.Errorf("stats: %+v, want 1 conflict and 1 defence frame", s)
	}
}

// A claim on an address this node does not announce is none of its
// business: nothing is reported, nothing sent.
func TestDefendOnlyOwned(t *testing.T) {
	synctest.Test(t, testDefendOnlyOwned)
}

func testDefendOnlyOwned(t *testing.T) {
	a, eth0, log := newDefendingAnnouncer(t, 50*time.Millisecond)
	if got := exchange(t, eth0.arp, gratuitousARP(peerMAC, other4)[0]); len(got) != 0 {
		t.Errorf("claim on an unowned address: sent %d frames", len(got))
	}
	if got := exchange(t, eth0.ndp, unsolicitedNA(peerMAC, other6)); len(got) != 0 {
		t.Errorf("NA for an unowned address: sent %d frames", len(got))
	}
	// Lost between the claim and the trailing defence: no defence.
	eth0.arp.deliver(t, gratuitousARP(peerMAC, vip4)[0])
	log.next(t)
	eth0.arp.deliver(t, gratuitousARP(peerMAC, vip4)[0])
	log.next(t)
	if err := a.SetOwned(nil); err != nil {
		t.Fatal(err)
	}
	n := len(eth0.arp.sent())
	time.Sleep(150 * time.Millisecond)
	synctest.Wait()
	if got := len(eth0.arp.sent()); got != n {
		t.Errorf("%d frames sent for an address lost before the trailing defence", got-n)
	}
	select {
	case c := <-log:
		t.Errorf("unexpected conflict %+v", c)
	default:
	}
}

// Two interfaces of one node on one LAN hear each other's announcements:
// those are no claim, or the two would defend against each other forever.
func TestDefendIgnoresSiblings(t *testing.T) {
	log := make(conflictLog, 16)
	fn := &fakeNet{}
	a := New(t.Context(), Options{Schedule: []time.Duration{}, Dial: fn.dial, DefendInterval: 10 * time.Millisecond,
		OnConflict: func(c Conflict) { log <- c }})
	t.Cleanup(func() { a.Close() })
	eth0, eth1 := testIface("eth0", 1), testIface("eth1", 2)
	if err := a.SetInterfaces([]net.Interface{eth0, eth1}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}
	c0 := fn.iface("eth0")
	if got := exchange(t, c0.arp, gratuitousARP(eth1.HardwareAddr, vip4)[0]); len(got) != 0 {
		t.Errorf("eth0 answered eth1's gratuitous ARP with %d frames", len(got))
	}
	if got := exchange(t, c0.ndp, unsolicitedNA(eth1.HardwareAddr, vip6)); len(got) != 0 {
		t.Errorf("eth0 answered eth1's unsolicited NA with %d frames", len(got))
	}
	// A stranger is still a claim.
	c0.arp.deliver(t, gratuitousARP(peerMAC, vip4)[0])
	if c := log.next(t); c.MAC.String() != peerMAC.String() {
		t.Errorf("conflict %+v, want one from %s", c, peerMAC)
	}
	if s := a.Stats(); s.ARP.Conflicts != 1 || s.NDP.Conflicts != 0 {
		t.Errorf("conflicts counted: ARP %d, NDP %d; want 1 and 0", s.ARP.Conflicts, s.NDP.Conflicts)
	}
}

// A watched address is one this node stepped back from: claims on it are
// reported, never answered nor defended. Reannounce sends one round for an
// owned address only.
func TestWatchedAndReannounce(t *testing.T) {
	synctest.Test(t, testWatchedAndReannounce)
}

func testWatchedAndReannounce(t *testing.T) {
	log := make(conflictLog, 16)
	fn := &fakeNet{}
	a := New(t.Context(), Options{Schedule: []time.Duration{}, Dial: fn.dial, DefendInterval: 10 * time.Millisecond,
		OnConflict: func(c Conflict) { log <- c }})
	t.Cleanup(func() { a.Close() })
	a.SetWatched([]netip.Addr{vip4, vip6})
	// Set before the interface exists: a new responder watches too.
	if err := a.SetInterfaces([]net.Interface{testIface("eth0", 1)}); err != nil {
		t.Fatal(err)
	}
	eth0 := fn.iface("eth0")
	if got := exchange(t, eth0.arp, gratuitousARP(peerMAC, vip4)[0]); len(got) != 0 {
		t.Errorf("claim on a watched address: sent %d frames", len(got))
	}
	want := Conflict{Addr: vip4, MAC: peerMAC, Interface: "eth0", Defended: false}
	if diff := cmp.Diff(want, log.next(t), addrEqual); diff != "" {
		t.Errorf("conflict (-want +got):\n%s", diff)
	}
	eth0.ndp.deliver(t, unsolicitedNA(peerMAC, vip6))
	if c := log.next(t); c.Addr != vip6 || c.Defended {
		t.Errorf("NA on a watched address: %+v, want reported, not defended", c)
	}
	// Not answered either.
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); len(got) != 0 {
		t.Errorf("request for a watched address answered with %d frames", len(got))
	}
	time.Sleep(30 * time.Millisecond) // past any trailing defence
	synctest.Wait()
	a.Reannounce(vip4)
	if n := len(eth0.arp.sent()); n != 0 {
		t.Errorf("%d frames sent for an address that is only watched", n)
	}

	a.SetWatched(nil)
	if got := exchange(t, eth0.arp, gratuitousARP(peerMAC, vip4)[0]); len(got) != 0 {
		t.Errorf("claim after unwatching: sent %d frames", len(got))
	}
	select {
	case c := <-log:
		t.Errorf("claim on an address neither owned nor watched reported: %+v", c)
	case <-time.After(50 * time.Millisecond):
	}

	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil}); err != nil {
		t.Fatal(err)
	}
	a.Reannounce(vip4)
	if diff := cmp.Diff(summarize(gratuitousARP(eth0.ifi.HardwareAddr, vip4), summarizeARP), summarize(waitSent(t, eth0.arp, 2), summarizeARP)); diff != "" {
		t.Errorf("Reannounce (-want +got):\n%s", diff)
	}
}

// Claims by other speakers are reported, not defended: the election
// decides, and fighting a speaker that is taking an address over would
// flap the LAN.
func TestDefendLeavesPeersAlone(t *testing.T) {
	synctest.Test(t, testDefendLeavesPeersAlone)
}

func testDefendLeavesPeersAlone(t *testing.T) {
	log := make(conflictLog, 16)
	fn := &fakeNet{}
	peer := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x42}
	a := New(t.Context(), Options{Schedule: []time.Duration{}, Dial: fn.dial, DefendInterval: 10 * time.Millisecond,
		OnConflict: func(c Conflict) { log <- c },
		Peer:       func(m net.HardwareAddr) bool { return m.String() == peer.String() }})
	t.Cleanup(func() { a.Close() })
	if err := a.SetInterfaces([]net.Interface{testIface("eth0", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil}); err != nil {
		t.Fatal(err)
	}
	eth0 := fn.iface("eth0")
	if got := exchange(t, eth0.arp, gratuitousARP(peer, vip4)[0]); len(got) != 0 {
		t.Errorf("claim by a peer answered with %d frames", len(got))
	}
	want := Conflict{Addr: vip4, MAC: peer, Interface: "eth0", Peer: true}
	if diff := cmp.Diff(want, log.next(t), addrEqual); diff != "" {
		t.Errorf("conflict (-want +got):\n%s", diff)
	}
	time.Sleep(30 * time.Millisecond) // no trailing defence either
	synctest.Wait()
	if n := len(eth0.arp.sent()); n != 0 {
		t.Errorf("%d frames sent after a peer's claim", n)
	}
	// A stranger is still defended.
	eth0.arp.deliver(t, gratuitousARP(peerMAC, vip4)[0])
	if c := log.next(t); !c.Defended || c.Peer {
		t.Errorf("stranger's claim: %+v, want defended, not a peer", c)
	}
}
