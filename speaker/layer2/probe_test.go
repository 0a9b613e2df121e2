package layer2

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

var (
	thirdMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x33}
	ourLL6   = netip.MustParseAddr("fe80::11")
)

// naFor builds a Neighbor Advertisement for target, with tlla as its
// target link-layer address (none when nil).
func naFor(ethSrc net.HardwareAddr, src, dst netip.Addr, target netip.Addr, tlla net.HardwareAddr) []byte {
	na := &ndp.NeighborAdvertisement{Override: true, TargetAddress: target}
	if tlla != nil {
		na.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: tlla}}
	}
	body, err := ndp.MarshalMessageChecksum(na, src, dst)
	if err != nil {
		panic(err)
	}
	return ipv6Frame(ethSrc, allNodesMAC, src, dst, protoICMPv6, ndpHopLimit, body, 0)
}

func TestDecodeAnswer(t *testing.T) {
	arpProbe := func(from net.HardwareAddr, target netip.Addr) []byte {
		return marshalARP(nil, arp.OperationRequest, broadcastMAC, from, netip.IPv4Unspecified(), zeroMAC, target)
	}
	// Linux's answer to an ARP probe: a reply from the address to 0.0.0.0.
	probeReply := marshalARP(nil, arp.OperationReply, ourMAC, peerMAC, vip4, ourMAC, netip.IPv4Unspecified())
	// Our own binding relayed by something that rewrote the Ethernet source.
	relayed := marshalARP(nil, arp.OperationReply, broadcastMAC, ourMAC, vip4, broadcastMAC, vip4)
	copy(relayed[6:12], peerMAC)
	badSum := naFor(peerMAC, vip6, allNodes, vip6, peerMAC)
	badSum[len(badSum)-1] ^= 0xff
	tests := []struct {
		name   string
		frame  []byte
		target netip.Addr
		kind   answerKind
		mac    net.HardwareAddr
	}{
		{"ARP reply to a probe", probeReply, vip4, answerHolder, peerMAC},
		{"gratuitous ARP request", gratuitousARP(peerMAC, vip4)[0], vip4, answerHolder, peerMAC},
		{"gratuitous ARP reply", gratuitousARP(peerMAC, vip4)[1], vip4, answerHolder, peerMAC},
		{"request sent from the address", arpRequest(peerMAC, vip4, peerIP), vip4, answerHolder, peerMAC},
		{"simultaneous ARP probe", arpProbe(peerMAC, vip4), vip4, answerProbe, peerMAC},
		{"ARP probe for another address", arpProbe(peerMAC, other4), vip4, answerNone, nil},
		{"request for the address from a third host", arpRequest(peerMAC, peerIP, vip4), vip4, answerNone, nil},
		{"our own probe", arpProbe(ourMAC, vip4), vip4, answerNone, nil},
		{"reply naming our MAC from elsewhere", relayed, vip4, answerNone, nil},
		{"ARP reply for another address", gratuitousARP(peerMAC, other4)[1], vip4, answerNone, nil},
		{"ARP with a group sender MAC", marshalARP(nil, arp.OperationReply, broadcastMAC, broadcastMAC, vip4, zeroMAC, vip4), vip4, answerNone, nil},
		{"ARP frame, IPv6 target", probeReply, vip6, answerNone, nil},
		{"truncated ARP", probeReply[:30], vip4, answerNone, nil},
		{"unsolicited NA", unsolicitedNA(peerMAC, vip6), vip6, answerHolder, peerMAC},
		{"NA for another target", unsolicitedNA(peerMAC, other6), vip6, answerNone, nil},
		{"NA without a target link-layer address: the Ethernet source", naFor(thirdMAC, vip6, allNodes, vip6, nil), vip6, answerHolder, thirdMAC},
		{"NA with a multicast target link-layer address", naFor(peerMAC, vip6, allNodes, vip6, allNodesMAC), vip6, answerNone, nil},
		{"NA with a bad checksum", badSum, vip6, answerNone, nil},
		{"our own NA", unsolicitedNA(ourMAC, vip6), vip6, answerNone, nil},
		{"DAD from another node", nsFrame{src: netip.IPv6Unspecified(), target: vip6, noSourceLLA: true}.bytes(), vip6, answerProbe, peerMAC},
		{"NS sent from the address", nsFrame{src: vip6, target: peerIP6}.bytes(), vip6, answerNone, nil},
		{"NS from the address for itself", nsFrame{src: vip6, target: vip6}.bytes(), vip6, answerHolder, peerMAC},
		{"NS from a third host for the address", nsFrame{src: peerIP6, target: vip6}.bytes(), vip6, answerNone, nil},
		{"NS with hop limit 64", nsFrame{src: netip.IPv6Unspecified(), target: vip6, noSourceLLA: true, hopLimit: 64}.bytes(), vip6, answerNone, nil},
		{"IPv6 frame, IPv4 target", unsolicitedNA(peerMAC, vip6), vip4, answerNone, nil},
		{"empty", nil, vip4, answerNone, nil},
		{"header only", make([]byte, ethHeaderLen), vip6, answerNone, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, mac := decodeAnswer(tt.frame, ourMAC, tt.target)
			var got net.HardwareAddr
			if kind != answerNone {
				got = net.HardwareAddr(mac[:])
			}
			if kind != tt.kind || got.String() != tt.mac.String() {
				t.Errorf("decodeAnswer = %v %v, want %v %v", kind, got, tt.kind, tt.mac)
			}
		})
	}
}

// newCheckAnnouncer is newTestAnnouncer with the options Check and Probe
// use; eth0 has 198.51.100.11 and fe80::11, eth1 no address.
func newCheckAnnouncer(t *testing.T, opts Options, names ...string) (*Announcer, *fakeNet) {
	t.Helper()
	fn := &fakeNet{}
	opts.Dial = fn.dial
	opts.Schedule = []time.Duration{}
	opts.Refresh = -1
	opts.InterfaceAddrs = func(ifi *net.Interface) ([]netip.Addr, error) {
		if ifi.Name == "eth0" {
			return []netip.Addr{netip.MustParseAddr("2001:db8:100::11"), ourLL6, netip.MustParseAddr("198.51.100.11")}, nil
		}
		return nil, nil
	}
	return startTestAnnouncer(t, opts, fn, names...), fn
}

type checkResult struct {
	macs []string
	err  error
}

func runCheck(ctx context.Context, a *Announcer, ip netip.Addr, iface string) chan checkResult {
	res := make(chan checkResult, 1)
	go func() {
		macs, err := a.Check(ctx, ip, iface)
		var s []string
		for _, m := range macs {
			s = append(s, m.String())
		}
		res <- checkResult{s, err}
	}()
	return res
}

// sentCount waits until c has sent at least n frames and returns them.
func sentCount(t *testing.T, c *fakeConn, n int) [][]byte {
	t.Helper()
	waitFor(t, "frames sent", func() bool { return len(c.sent()) >= n })
	return c.sent()
}

func TestCheckIPv4(t *testing.T) {
	synctest.Test(t, testCheckIPv4)
}

func testCheckIPv4(t *testing.T) {
	a, fn := newCheckAnnouncer(t, Options{CheckTimeout: 300 * time.Millisecond}, "eth0", "eth1")
	eth0, eth1 := fn.iface("eth0"), fn.iface("eth1")
	res := runCheck(t.Context(), a, vip4, "eth0")
	q := sentCount(t, eth0.arp, 1)
	want := &arpSummary{EthDst: "ff:ff:ff:ff:ff:ff", EthSrc: eth0.ifi.HardwareAddr.String(), Op: arp.OperationRequest,
		SenderMAC: eth0.ifi.HardwareAddr.String(), SenderIP: "198.51.100.11", TargetMAC: "00:00:00:00:00:00", TargetIP: vip4.String()}
	if diff := cmp.Diff(want, summarizeARP(q[0])); diff != "" {
		t.Errorf("question (-want +got):\n%s", diff)
	}
	reply := func(from net.HardwareAddr) []byte {
		return marshalARP(nil, arp.OperationReply, eth0.ifi.HardwareAddr, from, vip4, eth0.ifi.HardwareAddr, netip.MustParseAddr("198.51.100.11"))
	}
	eth0.arp.deliver(t, reply(peerMAC))
	eth0.arp.deliver(t, reply(peerMAC))                   // the same host twice: one MAC
	eth0.arp.deliver(t, reply(eth1.ifi.HardwareAddr))     // this node's other interface
	eth0.arp.deliver(t, gratuitousARP(thirdMAC, vip4)[0]) // a second claimant
	eth0.arp.deliver(t, gratuitousARP(peerMAC, other4)[0])
	got := <-res
	if got.err != nil {
		t.Fatal(got.err)
	}
	if diff := cmp.Diff([]string{peerMAC.String(), thirdMAC.String()}, got.macs); diff != "" {
		t.Errorf("MACs (-want +got):\n%s", diff)
	}
	if n := len(eth1.arp.sent()) + len(eth1.ndp.sent()) + len(eth0.ndp.sent()); n != 0 {
		t.Errorf("%d frames sent elsewhere than eth0's ARP socket", n)
	}
	if s := a.Stats().ARP; s.Probes != 1 {
		t.Errorf("ARP probes counted %d, want 1", s.Probes)
	}

	// Without an IPv4 address on the interface: an ARP probe.
	res = runCheck(t.Context(), a, vip4, "eth1")
	q = sentCount(t, eth1.arp, 1)
	if s := summarizeARP(q[0]); s.SenderIP != "0.0.0.0" || s.TargetIP != vip4.String() || s.SenderMAC != eth1.ifi.HardwareAddr.String() {
		t.Errorf("question from an interface without IPv4: %+v", s)
	}
	// Nobody answers: an empty result, no error.
	if got := <-res; got.err != nil || len(got.macs) != 0 {
		t.Errorf("Check with no answer = %v, %v; want no MAC, no error", got.macs, got.err)
	}
}

func TestCheckIPv6(t *testing.T) {
	synctest.Test(t, testCheckIPv6)
}

func testCheckIPv6(t *testing.T) {
	a, fn := newCheckAnnouncer(t, Options{CheckTimeout: 300 * time.Millisecond}, "eth0", "eth1")
	eth0, eth1 := fn.iface("eth0"), fn.iface("eth1")
	res := runCheck(t.Context(), a, vip6, "eth0")
	q := sentCount(t, eth0.ndp, 1)
	want := nsFrame{ethSrc: eth0.ifi.HardwareAddr, src: ourLL6, target: vip6}.bytes()
	if diff := cmp.Diff(want, q[0]); diff != "" {
		t.Errorf("question (-want +got):\n%s", diff)
	}
	eth0.ndp.deliver(t, naFor(peerMAC, vip6, ourLL6, vip6, peerMAC))
	eth0.ndp.deliver(t, nsFrame{src: netip.IPv6Unspecified(), target: vip6, noSourceLLA: true, ethSrc: thirdMAC}.bytes()) // a probe is no answer to a check
	got := <-res
	if got.err != nil {
		t.Fatal(got.err)
	}
	if diff := cmp.Diff([]string{peerMAC.String()}, got.macs); diff != "" {
		t.Errorf("MACs (-want +got):\n%s", diff)
	}

	// No link-local address: a DAD-style solicitation from ::.
	res = runCheck(t.Context(), a, vip6, "eth1")
	q = sentCount(t, eth1.ndp, 1)
	want = nsFrame{ethSrc: eth1.ifi.HardwareAddr, src: netip.IPv6Unspecified(), target: vip6, noSourceLLA: true}.bytes()
	if diff := cmp.Diff(want, q[0]); diff != "" {
		t.Errorf("question without a link-local address (-want +got):\n%s", diff)
	}
	<-res
}

func TestCheckRefuses(t *testing.T) {
	synctest.Test(t, testCheckRefuses)
}

func testCheckRefuses(t *testing.T) {
	a, fn := newCheckAnnouncer(t, Options{}, "eth0")
	if _, err := a.Check(t.Context(), vip4, "eth9"); !errors.Is(err, ErrNotManaged) {
		t.Errorf("Check on an unmanaged interface: %v, want ErrNotManaged", err)
	}
	if _, err := a.Check(t.Context(), netip.MustParseAddr("ff02::1"), "eth0"); err == nil {
		t.Error("Check of a multicast address: no error")
	}
	if n := len(fn.iface("eth0").arp.sent()) + len(fn.iface("eth0").ndp.sent()); n != 0 {
		t.Errorf("%d frames sent for refused checks", n)
	}
	a.Close()
	if _, err := a.Check(t.Context(), vip4, "eth0"); !errors.Is(err, ErrClosed) {
		t.Errorf("Check after Close: %v, want ErrClosed", err)
	}
}

// TestCheckRateBound: with a rate of one question per second, a second
// check right after the first cannot get a token before its deadline and
// sends nothing.
func TestCheckRateBound(t *testing.T) {
	synctest.Test(t, testCheckRateBound)
}

func testCheckRateBound(t *testing.T) {
	a, fn := newCheckAnnouncer(t, Options{ProbeRate: 1, CheckTimeout: 10 * time.Millisecond}, "eth0")
	if _, err := a.Check(t.Context(), vip4, "eth0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := a.Check(ctx, vip4, "eth0"); err == nil {
		t.Error("second check within the rate's interval succeeded")
	}
	if n := len(fn.iface("eth0").arp.sent()); n != 1 {
		t.Errorf("%d questions sent, want 1", n)
	}
	// The bound survives reopening the interface.
	if err := a.SetInterfaces(nil); err != nil {
		t.Fatal(err)
	}
	if err := a.SetInterfaces([]net.Interface{testIface("eth0", 1)}); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel2()
	if _, err := a.Check(ctx2, vip4, "eth0"); err == nil {
		t.Error("check right after reopening the interface escaped the rate bound")
	}
}

type probeResult struct {
	macs []string
	err  error
	took time.Duration
}

func runProbe(ctx context.Context, a *Announcer, ip netip.Addr, ifaces []string) chan probeResult {
	res := make(chan probeResult, 1)
	go func() {
		start := time.Now()
		macs, err := a.Probe(ctx, ip, ifaces)
		var s []string
		for _, m := range macs {
			s = append(s, m.String())
		}
		res <- probeResult{s, err, time.Since(start)}
	}()
	return res
}

func TestProbeIPv4(t *testing.T) {
	synctest.Test(t, testProbeIPv4)
}

func testProbeIPv4(t *testing.T) {
	a, fn := newCheckAnnouncer(t, Options{Peer: func(m net.HardwareAddr) bool { return m.String() == thirdMAC.String() }}, "eth0", "eth1")
	eth0, eth1 := fn.iface("eth0"), fn.iface("eth1")

	// Nobody answers: ProbeNum probes on every interface, nothing found.
	got := <-runProbe(t.Context(), a, vip4, nil)
	if got.err != nil || len(got.macs) != 0 {
		t.Errorf("Probe with no answer = %v, %v", got.macs, got.err)
	}
	for _, f := range []*fakeIface{eth0, eth1} {
		sent := f.arp.sent()
		if len(sent) != ProbeNum {
			t.Errorf("%s: %d probes, want %d", f.ifi.Name, len(sent), ProbeNum)
		}
		for _, p := range sent {
			want := &arpSummary{EthDst: "ff:ff:ff:ff:ff:ff", EthSrc: f.ifi.HardwareAddr.String(), Op: arp.OperationRequest,
				SenderMAC: f.ifi.HardwareAddr.String(), SenderIP: "0.0.0.0", TargetMAC: "00:00:00:00:00:00", TargetIP: vip4.String()}
			if diff := cmp.Diff(want, summarizeARP(p)); diff != "" {
				t.Errorf("%s: probe (-want +got):\n%s", f.ifi.Name, diff)
			}
		}
	}
	t.Logf("probe without answers took %v", got.took)

	// Restricted to eth1; another speaker's answer (Peer) does not end
	// it, a foreign host's does, after the first probe.
	res := runProbe(t.Context(), a, vip4, []string{"eth1"})
	sentCount(t, eth1.arp, ProbeNum+1)
	eth1.arp.deliver(t, gratuitousARP(thirdMAC, vip4)[1])
	eth1.arp.deliver(t, marshalARP(nil, arp.OperationRequest, broadcastMAC, peerMAC, netip.IPv4Unspecified(), zeroMAC, vip4)) // simultaneous probe
	got = <-res
	if got.err != nil {
		t.Fatal(got.err)
	}
	if diff := cmp.Diff([]string{thirdMAC.String(), peerMAC.String()}, got.macs); diff != "" {
		t.Errorf("MACs (-want +got):\n%s", diff)
	}
	if n := len(eth0.arp.sent()); n != ProbeNum {
		t.Errorf("eth0 sent %d more probes for a probe restricted to eth1", n-ProbeNum)
	}
	if n := len(eth1.arp.sent()) - ProbeNum; n >= ProbeNum {
		t.Errorf("eth1 sent %d probes although a foreign host answered the first", n)
	}

	// No interface allowed: nothing sent, nothing found.
	if macs, err := a.Probe(t.Context(), vip4, []string{}); err != nil || macs != nil {
		t.Errorf("Probe on no interface = %v, %v", macs, err)
	}
}

func TestProbeIPv6(t *testing.T) {
	synctest.Test(t, testProbeIPv6)
}

func testProbeIPv6(t *testing.T) {
	a, fn := newCheckAnnouncer(t, Options{}, "eth0")
	eth0 := fn.iface("eth0")
	res := runProbe(t.Context(), a, vip6, nil)
	q := sentCount(t, eth0.ndp, 1)
	want := nsFrame{ethSrc: eth0.ifi.HardwareAddr, src: netip.IPv6Unspecified(), target: vip6, noSourceLLA: true}.bytes()
	if diff := cmp.Diff(want, q[0]); diff != "" {
		t.Errorf("DAD probe (-want +got):\n%s", diff)
	}
	// Linux's answer to DAD: an NA to all-nodes.
	eth0.ndp.deliver(t, naFor(peerMAC, vip6, allNodes, vip6, peerMAC))
	got := <-res
	if got.err != nil {
		t.Fatal(got.err)
	}
	if diff := cmp.Diff([]string{peerMAC.String()}, got.macs); diff != "" {
		t.Errorf("MACs (-want +got):\n%s", diff)
	}
	// The solicited-node group was joined for the probe, and left after.
	wantGroups := []string{"join ff02::1:ff00:100", "leave ff02::1:ff00:100"}
	if diff := cmp.Diff(wantGroups, eth0.groups.events()); diff != "" {
		t.Errorf("groups (-want +got):\n%s", diff)
	}
}

// TestCheckSourcesCached: a round of checks reads the interface's
// addresses once, not once per question, and again once they may be
// stale.
func TestCheckSourcesCached(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var reads atomic.Int32
		a, fn := newCheckAnnouncer(t, Options{CheckTimeout: 50 * time.Millisecond}, "eth0")
		inner := a.ifaceAddrs
		a.ifaceAddrs = func(ifi *net.Interface) ([]netip.Addr, error) {
			reads.Add(1)
			return inner(ifi)
		}
		eth0 := fn.iface("eth0")
		for i := range 3 {
			res := runCheck(t.Context(), a, vip4, "eth0")
			q := sentCount(t, eth0.arp, i+1)
			if s := summarizeARP(q[i]); s.SenderIP != "198.51.100.11" {
				t.Fatalf("question %d from %s, want the interface's 198.51.100.11", i, s.SenderIP)
			}
			<-res
		}
		if n := reads.Load(); n != 1 {
			t.Errorf("three checks within %v read the addresses %d times, want once", sourcesFor, n)
		}
		time.Sleep(sourcesFor)
		<-runCheck(t.Context(), a, vip4, "eth0")
		if n := reads.Load(); n != 2 {
			t.Errorf("a check %v later: %d reads, want 2", sourcesFor, n)
		}
	})
}
