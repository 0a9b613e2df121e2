package layer2

import (
	"net"
	"net/netip"
	"testing"
)

// FuzzDecide feeds arbitrary bytes to both per-frame decisions, as any frame
// on the LAN may reach either socket. Neither may panic, whatever they
// answer must be a well-formed reply for an owned address, and a conflict
// must name an owned address and a unicast MAC that is not ours (a claim
// naming our own MAC would make the responder fight itself). The seeds
// under testdata/fuzz/FuzzDecide cover the claim paths: gratuitous ARP,
// replies and NAs from another MAC, and solicitations sent from an owned
// address.
func FuzzDecide(f *testing.F) {
	seeds := [][]byte{
		arpRequest(peerMAC, peerIP, vip4),
		arpRequest(peerMAC, netip.IPv4Unspecified(), vip4),
		gratuitousARP(peerMAC, vip4)[1],
		nsFrame{src: peerIP6, target: vip6}.bytes(),
		nsFrame{src: peerIP6, dst: vip6, ethDst: ourMAC, target: vip6, padTo: 100}.bytes(),
		nsFrame{src: netip.IPv6Unspecified(), target: vip6, noSourceLLA: true}.bytes(),
		unsolicitedNA(peerMAC, vip6),
		withTarget(nsFrame{src: peerIP6, target: vip6}.bytes(), netip.MustParseAddr("ff02::1")),
		gratuitousARP(peerMAC, vip4)[0],
		arpRequest(peerMAC, vip4, peerIP),
		nsFrame{src: vip6, target: other6}.bytes(),
		unsolicitedNA(ourMAC, vip6),
		{},
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		checkClaim := func(family string, v verdict, c claim) {
			if v != verdictConflict {
				if c != (claim{}) {
					t.Fatalf("%s: verdict %v with a claim %s", family, v, summarizeClaim(c))
				}
				return
			}
			if mac := net.HardwareAddr(c.mac[:]); !ownedSet.has(c.ip) || !isUnicastMAC(mac) || sameMAC(mac, ourMAC) {
				t.Fatalf("%s: bad claim %s", family, summarizeClaim(c))
			}
		}
		v, reply, c := decideARP(frame, ourMAC, ownedSet)
		checkClaim("ARP", v, c)
		if v == verdictAnswer {
			s := summarizeARP(reply)
			if s.Op != 2 || s.SenderMAC != ourMAC.String() || !ownedSet.has(netip.MustParseAddr(s.SenderIP)) {
				t.Fatalf("bad ARP answer %+v", s)
			}
		} else if reply != nil {
			t.Fatalf("verdict %v with a reply", v)
		}
		v, reply, c = decideNDP(frame, ourMAC, ownedSet)
		checkClaim("NDP", v, c)
		if v == verdictAnswer {
			s := summarizeNA(reply)
			if !s.ChecksumOK || s.HopLimit != 255 || !s.Override || s.TargetLLA != ourMAC.String() ||
				!ownedSet.has(netip.MustParseAddr(s.Target)) {
				t.Fatalf("bad NA answer %+v", s)
			}
		} else if reply != nil {
			t.Fatalf("verdict %v with a reply", v)
		}
	})
}

// FuzzDecodeAnswer feeds arbitrary bytes to the decision Check and Probe
// run on every frame while they wait for answers. It may not panic, and an
// answer must name a unicast MAC that is not ours (our own would make a
// node conflict with itself). The seeds under
// testdata/fuzz/FuzzDecodeAnswer are the answers the lab sees: Linux's
// reply to an ARP probe, its NA to a DAD probe, simultaneous probes.
func FuzzDecodeAnswer(f *testing.F) {
	for _, s := range [][]byte{
		marshalARP(nil, 2, ourMAC, peerMAC, vip4, ourMAC, netip.IPv4Unspecified()),
		marshalARP(nil, 1, broadcastMAC, peerMAC, netip.IPv4Unspecified(), zeroMAC, vip4),
		gratuitousARP(peerMAC, vip4)[0],
		unsolicitedNA(peerMAC, vip6),
		nsFrame{src: netip.IPv6Unspecified(), target: vip6, noSourceLLA: true}.bytes(),
		nsFrame{src: vip6, target: vip6}.bytes(),
		{},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, target := range []netip.Addr{vip4, vip6} {
			kind, m := decodeAnswer(frame, ourMAC, target)
			mac := net.HardwareAddr(m[:])
			switch kind {
			case answerNone:
				if m != ([macLen]byte{}) {
					t.Fatalf("%s: no answer, but MAC %s", target, mac)
				}
			case answerHolder, answerProbe:
				if !isUnicastMAC(mac) || sameMAC(mac, ourMAC) {
					t.Fatalf("%s: answer %v from MAC %s", target, kind, mac)
				}
			default:
				t.Fatalf("%s: unknown answer kind %v", target, kind)
			}
		}
	})
}
