package layer2

import (
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// MACs of the drain tests: the speaker the addresses are handed over to,
// another speaker, and a host that is no speaker at all.
var (
	newOwnerMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	otherSpeakerMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0c}
	strangerMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
)

// newDrainingAnnouncer starts an Announcer on the given interfaces that
// owns vip4 and vip6 and drains both to newOwnerMAC. No gain bursts, so
// that every frame sent is a reply or a defence.
func newDrainingAnnouncer(t *testing.T, names ...string) (*Announcer, *fakeNet, conflictLog) {
	t.Helper()
	log := make(conflictLog, 64)
	fn := &fakeNet{}
	speakers := map[string]bool{newOwnerMAC.String(): true, otherSpeakerMAC.String(): true}
	a := startTestAnnouncer(t, Options{Schedule: []time.Duration{}, Dial: fn.dial, DefendInterval: 10 * time.Millisecond,
		OnConflict: func(c Conflict) { log <- c },
		Peer:       func(m net.HardwareAddr) bool { return speakers[m.String()] }}, fn, names...)
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}
	a.SetDraining(map[netip.Addr][]net.HardwareAddr{vip4: {newOwnerMAC}, vip6: {newOwnerMAC}})
	return a, fn, log
}

// answers returns how many of frames are replies from mac (ARP replies or
// solicited NAs naming mac).
func answersFrom(frames [][]byte, mac net.HardwareAddr) int {
	n := 0
	for _, f := range frames {
		if s := summarizeARP(f); s != nil && s.Op == 2 && s.SenderMAC == mac.String() && s.EthDst != broadcastMAC.String() {
			n++
			continue
		}
		if s := summarizeNA(f); s != nil && s.Solicited && s.TargetLLA == mac.String() {
			n++
		}
	}
	return n
}

// TestDrainEndsWhenNewOwnerHeardARP: a draining address is answered until
// the new owner's gratuitous ARP is decided, and from that frame on never:
// not a broadcast request that arrives right after it, not a refresh,
// defence or re-announcement. The claim is still reported, which is how
// the speaker learns the handover is done; other addresses are unaffected.
func TestDrainEndsWhenNewOwnerHeardARP(t *testing.T) {
	synctest.Test(t, testDrainEndsWhenNewOwnerHeardARP)
}

func testDrainEndsWhenNewOwnerHeardARP(t *testing.T) {
	a, fn, log := newDrainingAnnouncer(t, "eth0")
	eth0 := fn.iface("eth0")
	mac := eth0.ifi.HardwareAddr
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil, other4: nil}); err != nil {
		t.Fatal(err)
	}

	// Draining, nothing heard yet: clients still pointing here get answers.
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); answersFrom(got, mac) != 1 {
		t.Fatalf("before the new owner announced: %v, want one reply", summarize(got, summarizeARP))
	}

	// The new owner announces; the very next frame, a broadcast request
	// for the address, finds it gone. No sync of the speaker in between.
	sentBefore := len(eth0.arp.sent())
	eth0.arp.deliver(t, gratuitousARP(newOwnerMAC, vip4)[0])
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); len(got) != 0 {
		t.Errorf("request right after the new owner's announcement answered: %v", summarize(got, summarizeARP))
	}
	// The reply form of the announcement, unicast probes from a client
	// that resolved the new owner, requests from an address-less host:
	// none is answered any more.
	for _, f := range [][]byte{
		gratuitousARP(newOwnerMAC, vip4)[1],
		marshalARP(nil, 1, mac, peerMAC, peerIP, zeroMAC, vip4),
		arpRequest(peerMAC, netip.IPv4Unspecified(), vip4),
	} {
		if got := exchange(t, eth0.arp, f); len(got) != 0 {
			t.Errorf("after the handover, %+v answered with %v", summarizeARP(f), summarize(got, summarizeARP))
		}
	}
	c := log.next(t)
	if want := (Conflict{Addr: vip4, MAC: newOwnerMAC, Interface: "eth0", Peer: true}); !cmp.Equal(want, c, addrEqual) {
		t.Errorf("the new owner's claim was reported as %+v, want %+v", c, want)
	}

	// Nothing goes out for it any more, whatever asks.
	a.Reannounce(vip4)
	time.Sleep(30 * time.Millisecond) // past any trailing defence
	synctest.Wait()
	if got := eth0.arp.sent()[sentBefore:]; len(got) != 0 {
		t.Errorf("frames sent for the handed-over address: %v", summarize(got, summarizeARP))
	}

	// The speaker has not synced yet and still lists the address: it stays
	// quiet.
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil, other4: nil}); err != nil {
		t.Fatal(err)
	}
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); len(got) != 0 {
		t.Errorf("SetOwned with the drain still listed brought the address back: %v", summarize(got, summarizeARP))
	}

	// Other addresses, the other family's draining one included, are
	// still answered.
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, other4)); answersFrom(got, mac) != 1 {
		t.Errorf("owned %s after another address was handed over: %v", other4, summarize(got, summarizeARP))
	}
	if got := exchange(t, eth0.ndp, nsFrame{src: peerIP6, target: vip6}.bytes()); answersFrom(got, mac) != 1 {
		t.Errorf("draining %s not heard yet: %v, want one NA", vip6, summarize(got, summarizeNA))
	}
}

// TestDrainEndsWhenNewOwnerHeardNDP is the IPv6 case: the new owner's
// unsolicited NA ends the drain; multicast and unicast solicitations that
// follow are not answered.
func TestDrainEndsWhenNewOwnerHeardNDP(t *testing.T) {
	synctest.Test(t, testDrainEndsWhenNewOwnerHeardNDP)
}

func testDrainEndsWhenNewOwnerHeardNDP(t *testing.T) {
	a, fn, log := newDrainingAnnouncer(t, "eth0")
	eth0 := fn.iface("eth0")
	mac := eth0.ifi.HardwareAddr

	if got := exchange(t, eth0.ndp, nsFrame{src: peerIP6, target: vip6}.bytes()); answersFrom(got, mac) != 1 {
		t.Fatalf("before the new owner announced: %v, want one NA", summarize(got, summarizeNA))
	}
	eth0.ndp.deliver(t, unsolicitedNA(newOwnerMAC, vip6))
	for _, f := range [][]byte{
		nsFrame{src: peerIP6, target: vip6}.bytes(),
		nsFrame{src: peerIP6, dst: vip6, ethDst: mac, target: vip6}.bytes(),
		nsFrame{src: peerLL6, target: vip6}.bytes(),
	} {
		if got := exchange(t, eth0.ndp, f); len(got) != 0 {
			t.Errorf("solicitation after the new owner's NA answered: %v", summarize(got, summarizeNA))
		}
	}
	if c := log.next(t); c.Addr != vip6 || c.MAC.String() != newOwnerMAC.String() || !c.Peer || c.Defended {
		t.Errorf("the new owner's NA was reported as %+v", c)
	}
	a.Reannounce(vip6)
	time.Sleep(30 * time.Millisecond)
	synctest.Wait()
	if got := eth0.ndp.sent(); len(got) != 1 {
		t.Errorf("NDP frames sent: %v, want only the one NA before the handover", summarize(got, summarizeNA))
	}
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); answersFrom(got, mac) != 1 {
		t.Errorf("draining %s not heard yet: %v, want one reply", vip4, summarize(got, summarizeARP))
	}
}

// TestDrainOnlyTheNewOwnerEndsIt: a claim by a host that is no speaker
// neither ends a drain nor silences an owned address: it is defended, as
// RFC 5227 has it, and the address is still answered. Nor does a claim by
// a speaker that is not the new owner; it is left to the election.
func TestDrainOnlyTheNewOwnerEndsIt(t *testing.T) {
	a, fn, log := newDrainingAnnouncer(t, "eth0")
	eth0 := fn.iface("eth0")
	mac := eth0.ifi.HardwareAddr
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil, other4: nil}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		claim  []byte
		ip     netip.Addr
		defend bool
	}{
		{"stranger claims the draining address", gratuitousARP(strangerMAC, vip4)[0], vip4, true},
		{"stranger claims an owned address", gratuitousARP(strangerMAC, other4)[1], other4, true},
		{"another speaker claims the draining address", gratuitousARP(otherSpeakerMAC, vip4)[0], vip4, false},
		{"the new owner claims an address that does not drain", gratuitousARP(newOwnerMAC, other4)[0], other4, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			time.Sleep(20 * time.Millisecond) // a fresh defence interval
			before := len(eth0.arp.sent())
			eth0.arp.deliver(t, tc.claim)
			if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, tc.ip)); answersFrom(got, mac) != 1 {
				t.Errorf("request after the claim: %v, want one reply from %s", summarize(got, summarizeARP), mac)
			}
			c := log.next(t)
			if c.Addr != tc.ip || c.Defended != tc.defend {
				t.Errorf("claim reported as %+v, want on %s, defended %v", c, tc.ip, tc.defend)
			}
			if tc.defend {
				// The defence: both forms of gratuitous ARP from this node.
				waitFor(t, "the defence", func() bool { return len(eth0.arp.sent()) >= before+3 })
				grat := 0
				for _, f := range eth0.arp.sent()[before:] {
					if s := summarizeARP(f); s.EthDst == broadcastMAC.String() && s.SenderMAC == mac.String() && s.SenderIP == tc.ip.String() {
						grat++
					}
				}
				if grat != 2 {
					t.Errorf("%d gratuitous frames defended %s, want 2", grat, tc.ip)
				}
			}
		})
	}
	// The NDP side of the same rule.
	eth0.ndp.deliver(t, unsolicitedNA(strangerMAC, vip6))
	if got := exchange(t, eth0.ndp, nsFrame{src: peerIP6, target: vip6}.bytes()); answersFrom(got, mac) != 1 {
		t.Errorf("NS after a stranger's NA for the draining %s: %v, want one NA", vip6, summarize(got, summarizeNA))
	}
	if c := log.next(t); c.Addr != vip6 || !c.Defended {
		t.Errorf("stranger's NA reported as %+v, want defended", c)
	}
}

// TestDrainEndsOnEveryInterface: the new owner heard on one interface
// silences the address on the others as well, as the speaker's next sync
// would.
func TestDrainEndsOnEveryInterface(t *testing.T) {
	_, fn, _ := newDrainingAnnouncer(t, "eth0", "eth1")
	eth0, eth1 := fn.iface("eth0"), fn.iface("eth1")
	if got := exchange(t, eth1.arp, arpRequest(peerMAC, peerIP, vip4)); answersFrom(got, eth1.ifi.HardwareAddr) != 1 {
		t.Fatalf("eth1 before the handover: %v, want one reply", summarize(got, summarizeARP))
	}
	eth0.arp.deliver(t, gratuitousARP(newOwnerMAC, vip4)[0])
	exchange(t, eth0.arp, []byte{0}) // eth0 has handled the announcement
	if got := exchange(t, eth1.arp, arpRequest(peerMAC, peerIP, vip4)); len(got) != 0 {
		t.Errorf("eth1 answered after eth0 heard the new owner: %v", summarize(got, summarizeARP))
	}
}

// TestDrainLifecycle: the drain's state follows SetDraining and SetOwned.
// An address whose drain ends while it is still owned (the election gave
// it back) is answered and announced again; one dropped by SetOwned and
// later gained anew is answered as any gained address; a drain to other
// MACs starts unheard.
func TestDrainLifecycle(t *testing.T) {
	synctest.Test(t, testDrainLifecycle)
}

func testDrainLifecycle(t *testing.T) {
	fn := &fakeNet{}
	// Claims by speakers are never defended, so that only replies and
	// announcements go out.
	a := startTestAnnouncer(t, Options{Schedule: []time.Duration{0}, Dial: fn.dial,
		Peer: func(m net.HardwareAddr) bool {
			return m.String() == newOwnerMAC.String() || m.String() == otherSpeakerMAC.String()
		}}, fn, "eth0")
	eth0 := fn.iface("eth0")
	mac := eth0.ifi.HardwareAddr
	owned := map[netip.Addr][]string{vip4: nil}
	if err := a.SetOwned(owned); err != nil {
		t.Fatal(err)
	}
	waitSent(t, eth0.arp, 2) // the gain burst
	a.SetDraining(map[netip.Addr][]net.HardwareAddr{vip4: {newOwnerMAC}})
	eth0.arp.deliver(t, gratuitousARP(newOwnerMAC, vip4)[0])
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); len(got) != 0 {
		t.Fatalf("answered after the handover: %v", summarize(got, summarizeARP))
	}
	// The same drain again: still handed over.
	a.SetDraining(map[netip.Addr][]net.HardwareAddr{vip4: {newOwnerMAC}})
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); len(got) != 0 {
		t.Fatalf("answered after the same drain was set again: %v", summarize(got, summarizeARP))
	}

	// The election gives the address back before the drain is withdrawn.
	before := len(eth0.arp.sent())
	a.SetDraining(nil)
	got := waitSent(t, eth0.arp, before+2)[before:]
	if diff := cmp.Diff(summarize(gratuitousARP(mac, vip4), summarizeARP), summarize(got, summarizeARP)); diff != "" {
		t.Errorf("taking the address back: announcement (-want +got):\n%s", diff)
	}
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); answersFrom(got, mac) != 1 {
		t.Errorf("after the drain was withdrawn: %v, want one reply", summarize(got, summarizeARP))
	}

	// A drain to another speaker starts unheard; the previous new owner's
	// claims do not end it.
	a.SetDraining(map[netip.Addr][]net.HardwareAddr{vip4: {otherSpeakerMAC}})
	eth0.arp.deliver(t, gratuitousARP(newOwnerMAC, vip4)[0])
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); answersFrom(got, mac) != 1 {
		t.Errorf("drain to %s ended by %s: %v", otherSpeakerMAC, newOwnerMAC, summarize(got, summarizeARP))
	}
	eth0.arp.deliver(t, gratuitousARP(otherSpeakerMAC, vip4)[1])
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); len(got) != 0 {
		t.Errorf("answered after %s was heard: %v", otherSpeakerMAC, summarize(got, summarizeARP))
	}
	// Listed with other MACs (the new owner's interfaces changed): a new
	// drain, answered until one of those is heard, and not announced,
	// since the address is still not this node's.
	before = len(eth0.arp.sent())
	a.SetDraining(map[netip.Addr][]net.HardwareAddr{vip4: {newOwnerMAC}})
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); answersFrom(got, mac) != 1 {
		t.Errorf("drain to other MACs: %v, want one reply", summarize(got, summarizeARP))
	}
	time.Sleep(30 * time.Millisecond) // an announcement would have gone out
	synctest.Wait()
	if got := eth0.arp.sent()[before:]; len(got) != 1 {
		t.Errorf("drain to other MACs: sent %v, want only the reply", summarize(got, summarizeARP))
	}
	eth0.arp.deliver(t, gratuitousARP(newOwnerMAC, vip4)[0])

	// The speaker withdraws it, then the drain; later the address comes
	// back as a plain gain.
	if err := a.SetOwned(nil); err != nil {
		t.Fatal(err)
	}
	a.SetDraining(nil)
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); len(got) != 0 {
		t.Errorf("answered after SetOwned dropped it: %v", summarize(got, summarizeARP))
	}
	if err := a.SetOwned(owned); err != nil {
		t.Fatal(err)
	}
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); answersFrom(got, mac) != 1 {
		t.Errorf("gained again: %v, want one reply", summarize(got, summarizeARP))
	}

	// A drain with no MAC to hear cannot end early.
	a.SetDraining(map[netip.Addr][]net.HardwareAddr{vip4: {}})
	eth0.arp.deliver(t, gratuitousARP(newOwnerMAC, vip4)[0])
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); answersFrom(got, mac) != 1 {
		t.Errorf("drain without MACs ended by a claim: %v", summarize(got, summarizeARP))
	}
}

// TestDrainStopsBurst: an address handed over in the middle of its gain
// burst (a failback soon after a failover) sends none of the rounds that
// are left; a late gratuitous ARP from here would move clients back.
func TestDrainStopsBurst(t *testing.T) {
	synctest.Test(t, testDrainStopsBurst)
}

func testDrainStopsBurst(t *testing.T) {
	fn := &fakeNet{}
	a := startTestAnnouncer(t, Options{Schedule: []time.Duration{0, 300 * time.Millisecond, 600 * time.Millisecond}, Dial: fn.dial,
		Peer: func(m net.HardwareAddr) bool { return m.String() == newOwnerMAC.String() }}, fn, "eth0")
	eth0 := fn.iface("eth0")
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil}); err != nil {
		t.Fatal(err)
	}
	waitSent(t, eth0.arp, 2) // the first round
	a.SetDraining(map[netip.Addr][]net.HardwareAddr{vip4: {newOwnerMAC}})
	eth0.arp.deliver(t, gratuitousARP(newOwnerMAC, vip4)[0])
	exchange(t, eth0.arp, []byte{0})
	n := len(eth0.arp.sent())
	time.Sleep(800 * time.Millisecond) // past the last round
	synctest.Wait()
	if got := eth0.arp.sent()[n:]; len(got) != 0 {
		t.Errorf("burst went on after the handover: %v", summarize(got, summarizeARP))
	}
	if n > 4 {
		t.Errorf("%d frames before the handover, want at most two rounds", n)
	}
}
