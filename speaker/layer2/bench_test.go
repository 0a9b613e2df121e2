package layer2

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
)

// benchSet is an owned set of n IPv4 and n IPv6 addresses, as a speaker with
// many VIPs would hold.
func benchSet(n int) addrSet {
	s := make(addrSet, 2*n)
	// 198.51.0.0-198.51.3.231 and 2001:db8:100::-2001:db8:100::3e7.
	v4, v6 := netip.MustParseAddr("198.51.100.0").As4(), vip6.As16()
	for i := range n {
		v4[2], v4[3] = byte(i>>8), byte(i)
		v6[14], v6[15] = byte(i>>8), byte(i)
		s[netip.AddrFrom4(v4)] = struct{}{}
		s[netip.AddrFrom16(v6)] = struct{}{}
	}
	return s
}

// BenchmarkOwnedLookup is the per-packet ownership check as the read loop
// does it: an atomic load of the published set, then a map lookup.
func BenchmarkOwnedLookup(b *testing.B) {
	for _, n := range []int{10, 1000} {
		var p atomic.Pointer[addrSet]
		s := benchSet(n)
		p.Store(&s)
		for _, c := range []struct {
			name string
			ip   netip.Addr
		}{
			{"hit4", netip.MustParseAddr("198.51.0.7")},
			{"hit6", netip.MustParseAddr("2001:db8:100::7")},
			{"miss4", other4},
			{"miss6", netip.MustParseAddr("2001:db8:100::1:1")},
		} {
			ip := c.ip
			b.Run(fmt.Sprintf("n=%d/%s", n, c.name), func(b *testing.B) {
				hits := 0
				for b.Loop() {
					if (*p.Load()).has(ip) {
						hits++
					}
				}
				if c.name[:3] == "hit" && hits == 0 {
					b.Fatal("lookup missed an owned address")
				}
			})
		}
	}
}

// BenchmarkDecide is the whole per-frame work: parse, decide and (when
// owned) build the reply.
func BenchmarkDecide(b *testing.B) {
	s := benchSet(1000)
	s[vip4], s[vip6] = struct{}{}, struct{}{}
	cases := []struct {
		name   string
		decide func([]byte, net.HardwareAddr, addrSet) (verdict, []byte, claim)
		frame  []byte
	}{
		{"ARP/owned", decideARP, arpRequest(peerMAC, peerIP, vip4)},
		{"ARP/unowned", decideARP, arpRequest(peerMAC, peerIP, other4)},
		{"NDP/owned", decideNDP, nsFrame{src: peerIP6, target: vip6}.bytes()},
		{"NDP/unowned", decideNDP, nsFrame{src: peerIP6, target: netip.MustParseAddr("2001:db8:100::1:1")}.bytes()},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.decide(c.frame, ourMAC, s)
			}
		})
	}
}
