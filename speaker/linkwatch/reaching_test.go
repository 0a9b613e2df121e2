package linkwatch

import (
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHolders(t *testing.T) {
	ifis := []net.Interface{{Name: "eth0"}, {Name: "cni0"}, {Name: "eth1"}}
	held := map[string][]net.IP{
		"eth0": {net.ParseIP("198.51.100.11"), net.ParseIP("2001:db8:100::11")},
		"cni0": {net.ParseIP("203.0.113.1")},
		"eth1": {net.ParseIP("198.51.101.11")},
	}
	for _, tc := range []struct {
		name string
		ip   string
		want []string
	}{
		{"the node's LAN NIC only, not the CNI bridge", "198.51.100.11", []string{"eth0"}},
		{"IPv6 memberlist address", "2001:db8:100::11", []string{"eth0"}},
		{"address on no answering interface: watch them all", "192.0.2.1", []string{"eth0", "cni0", "eth1"}},
		{"no address: watch them all", "", []string{"eth0", "cni0", "eth1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := holders(ifis, held, net.ParseIP(tc.ip))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("holders(%q) (-want +got):\n%s", tc.ip, diff)
			}
		})
	}
}

func TestReachingNothingIsNotEverything(t *testing.T) {
	got := holders(nil, nil, net.ParseIP("198.51.100.11"))
	if got == nil || len(got) != 0 {
		t.Fatalf("holders(no interfaces) = %#v, want an empty, non-nil list", got)
	}
	if Carrier([]Link{{Name: "lo", Up: true, Carrier: true}}, got) {
		t.Fatal("with no interface to answer on, some link still counts as carrying")
	}
}
