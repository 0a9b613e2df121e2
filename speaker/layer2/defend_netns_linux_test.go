//go:build linux && e2e

package layer2

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/packet"
)

// TestNetnsDefence plays a foreign host claiming the owned addresses from
// the client's namespace, with a MAC nobody has, and checks on the wire
// that the node defends them: at once, then rate-limited while the claims
// go on, with its own announcement last. (The client's kernel cannot serve
// as the neighbour that gets misled here: a host never hears its own
// transmissions. The e2e lab checks real neighbour caches, on a bridge.)
func TestNetnsDefence(t *testing.T) {
	conflicts := make(chan Conflict, 256)
	r := newRigWith(t, Options{
		Schedule:   []time.Duration{0},
		OnConflict: func(c Conflict) { conflicts <- c },
	})
	intruder := net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x99}
	if err := r.a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // past the gain announcements

	for _, tc := range []struct {
		ip    netip.Addr
		claim []byte
		conn  *packet.Conn
		keep  func([]byte) bool
	}{
		{vip4, gratuitousARP(intruder, vip4)[0], r.arpConn, arpFrom(vip4)},
		{vip6, unsolicitedNA(intruder, vip6), r.ipv6Conn, naFrom(vip6)},
	} {
		t.Run(tc.ip.String(), func(t *testing.T) {
			drain(t, tc.conn)
			for len(conflicts) > 0 {
				<-conflicts // the previous subtest's stream
			}
			before := r.a.Stats()

			// One claim: reported and defended at once.
			res := make(chan []captured)
			go func() { res <- capture(t, tc.conn, 300*time.Millisecond, tc.keep) }()
			time.Sleep(10 * time.Millisecond)
			t0 := time.Now()
			send(t, tc.conn, tc.claim)
			select {
			case c := <-conflicts:
				if c.Addr != tc.ip || c.MAC.String() != intruder.String() || c.Interface != "va" || !c.Defended {
					t.Errorf("conflict %+v, want %s claimed by %s on va, defended", c, tc.ip, intruder)
				}
				t.Logf("%s: claim reported after %v", tc.ip, time.Since(t0).Round(time.Microsecond))
			case <-time.After(2 * time.Second):
				t.Fatalf("%s: no conflict reported within 2 s of the claim", tc.ip)
			}
			if got := <-res; len(got) == 0 {
				t.Errorf("%s: no defence seen on the wire after a claim", tc.ip)
			} else {
				t.Logf("%s: first defence frame on the wire %v after the claim was sent", tc.ip, got[0].at-10*time.Millisecond)
			}

			// A stream of claims, one every 50 ms for a second: the
			// defence is rate-limited, and the last word is the node's.
			time.Sleep(DefaultDefendInterval)
			const every, n = 50 * time.Millisecond, 20
			sent0 := r.a.Stats()
			go func() { res <- capture(t, tc.conn, time.Duration(n)*every+2*DefaultDefendInterval, tc.keep) }()
			time.Sleep(10 * time.Millisecond)
			start := time.Now()
			var last time.Duration
			for range n {
				send(t, tc.conn, tc.claim)
				last = time.Since(start)
				time.Sleep(every)
			}
			got := <-res
			after := r.a.Stats()
			fam, fam0, famBefore := after.ARP, sent0.ARP, before.ARP
			perRound := uint64(2)
			if tc.ip.Is6() {
				fam, fam0, famBefore, perRound = after.NDP, sent0.NDP, before.NDP, 1
			}
			rounds := (fam.Defences - fam0.Defences) / perRound
			// n claims over n*every: a leading defence, at most one per
			// interval after it, and the trailing one.
			limit := uint64(time.Duration(n)*every/DefaultDefendInterval) + 2
			if rounds < 2 || rounds > limit || uint64(len(got)) != rounds*perRound {
				t.Errorf("%s: %d defence rounds (%d frames on the wire) for %d claims over %v, want 2..%d", tc.ip, rounds, len(got), n, time.Duration(n)*every, limit)
			}
			if len(got) > 0 {
				// The capture started 10 ms before the first claim.
				lastDefence := got[len(got)-1].at - 10*time.Millisecond
				t.Logf("%s: %d claims in %v drew %d defence rounds (limit %d); last defence %v after the last claim",
					tc.ip, n, time.Duration(n)*every, rounds, limit, (lastDefence - last).Round(time.Millisecond))
				if lastDefence < last || lastDefence-last > 2*time.Second {
					t.Errorf("%s: last defence at %v, last claim at %v: want the defence last, within 2 s", tc.ip, lastDefence, last)
				}
			}
			if got := fam.Conflicts - famBefore.Conflicts; got != n+1 {
				t.Errorf("%s: %d conflicts counted, want %d", tc.ip, got, n+1)
			}
			// Never withdrawn: the client's kernel still resolves through
			// the node.
			kernelResolves(t, r, tc.ip)
		})
	}
}
