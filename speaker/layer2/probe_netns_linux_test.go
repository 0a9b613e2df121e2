//go:build linux && e2e

package layer2

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestNetnsCheckAndProbe asks, with real frames on a veth, who holds an
// address: the client namespace holds it on its interface (its kernel
// answers the node's ARP request, Neighbor Solicitation, ARP probe and
// DAD probe), then does not (nobody answers).
func TestNetnsCheckAndProbe(t *testing.T) {
	var r *rig
	r = newRigWith(t, Options{
		Schedule: []time.Duration{},
		InterfaceAddrs: func(ifi *net.Interface) (addrs []netip.Addr, err error) {
			err = inNetns(r.lab.node, func() error {
				addrs, err = interfaceAddrs(ifi)
				return err
			})
			return addrs, err
		},
	})
	macs := func(m []net.HardwareAddr) []string {
		var s []string
		for _, x := range m {
			s = append(s, x.String())
		}
		return s
	}
	for _, tc := range []struct {
		ip     netip.Addr
		prefix string
	}{
		{vip4, "/32"},
		{vip6, "/128"},
	} {
		t.Run(tc.ip.String(), func(t *testing.T) {
			add := []string{"-n", r.lab.client, "addr", "add", tc.ip.String() + tc.prefix, "dev", "vb"}
			if tc.ip.Is6() {
				add = append(add, "nodad")
			}
			run(t, "ip", add...)
			start := time.Now()
			got, err := r.a.Check(t.Context(), tc.ip, "va")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{labClientMAC.String()}, macs(got)); diff != "" {
				t.Errorf("Check while the client holds %s (-want +got):\n%s", tc.ip, diff)
			}
			t.Logf("Check %s: %v in %v", tc.ip, macs(got), time.Since(start).Round(time.Millisecond))
			start = time.Now()
			got, err = r.a.Probe(t.Context(), tc.ip, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{labClientMAC.String()}, macs(got)); diff != "" {
				t.Errorf("Probe while the client holds %s (-want +got):\n%s", tc.ip, diff)
			}
			t.Logf("Probe %s: conflict with %v found in %v", tc.ip, macs(got), time.Since(start).Round(time.Millisecond))

			run(t, "ip", "-n", r.lab.client, "addr", "del", tc.ip.String()+tc.prefix, "dev", "vb")
			got, err = r.a.Check(t.Context(), tc.ip, "va")
			if err != nil || len(got) != 0 {
				t.Errorf("Check after the client dropped %s = %v, %v; want nothing", tc.ip, macs(got), err)
			}
			start = time.Now()
			got, err = r.a.Probe(t.Context(), tc.ip, nil)
			if err != nil || len(got) != 0 {
				t.Errorf("Probe after the client dropped %s = %v, %v; want nothing", tc.ip, macs(got), err)
			}
			t.Logf("Probe %s with no answer took %v", tc.ip, time.Since(start).Round(time.Millisecond))
		})
	}
	if _, err := r.a.Check(t.Context(), vip4, "vb"); err == nil {
		t.Error("Check on an interface the announcer does not manage succeeded")
	}
	s := r.a.Stats()
	t.Logf("stats: %+v", s)
	if s.ARP.Probes == 0 || s.NDP.Probes == 0 || s.ARP.SendErrors != 0 || s.NDP.SendErrors != 0 {
		t.Errorf("unexpected counters %+v", s)
	}
}
