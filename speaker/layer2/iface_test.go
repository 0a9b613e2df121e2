package layer2

import (
	"encoding/binary"
	"net"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestEligible(t *testing.T) {
	mac := func(b byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, b} }
	const up = unix.IFF_UP | unix.IFF_BROADCAST | unix.IFF_MULTICAST | unix.IFF_RUNNING | unix.IFF_LOWER_UP
	mk := func(name string, idx int, flags uint32, hw net.HardwareAddr, master int) link {
		return link{ifi: net.Interface{Index: idx, Name: name, HardwareAddr: hw}, flags: flags, master: master}
	}
	links := []link{
		mk("lo", 1, unix.IFF_UP|unix.IFF_LOOPBACK, make(net.HardwareAddr, 6), 0),
		mk("eth0", 2, up, mac(2), 0),
		mk("eth1", 3, unix.IFF_BROADCAST, mac(3), 0), // admin down
		mk("bond0", 4, up, mac(4), 0),
		mk("eth2", 5, up|unix.IFF_SLAVE, mac(4), 4), // bond member
		mk("br0", 6, up, mac(6), 0),
		mk("veth1", 7, up, mac(7), 6), // bridge port
		mk("wg0", 8, unix.IFF_UP|unix.IFF_POINTOPOINT|unix.IFF_NOARP, nil, 0),
		mk("dummy0", 9, up|unix.IFF_NOARP, mac(9), 0),
		mk("ib0", 10, up, make(net.HardwareAddr, 20), 0),             // not Ethernet
		mk("eth3", 11, up, net.HardwareAddr{0x03, 0, 0, 0, 0, 1}, 0), // group bit set
	}
	names := func(ifis []net.Interface) []string {
		var out []string
		for _, i := range ifis {
			out = append(out, i.Name)
		}
		return out
	}
	tests := []struct {
		name  string
		allow []string
		want  []string
	}{
		{"every eligible", nil, []string{"eth0", "bond0", "br0"}},
		{"allow-list", []string{"br0", "eth2", "missing"}, []string{"br0"}},
		{"empty allow-list", []string{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, names(eligible(links, tt.allow))); diff != "" {
				t.Errorf("eligible (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseLink(t *testing.T) {
	hdr := make([]byte, syscall.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(hdr[4:8], 5)
	binary.NativeEndian.PutUint32(hdr[8:12], unix.IFF_UP|unix.IFF_RUNNING|unix.IFF_LOWER_UP|unix.IFF_BROADCAST|unix.IFF_MULTICAST)
	u32 := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	attr := func(typ uint16, v []byte) syscall.NetlinkRouteAttr {
		return syscall.NetlinkRouteAttr{Attr: syscall.RtAttr{Type: typ}, Value: v}
	}
	l := parseLink(hdr, []syscall.NetlinkRouteAttr{
		attr(syscall.IFLA_IFNAME, []byte("eth2\x00")),
		attr(syscall.IFLA_ADDRESS, []byte{0x02, 0, 0, 0, 0, 5}),
		attr(syscall.IFLA_MTU, u32(9000)),
		attr(syscall.IFLA_MASTER, u32(4)),
		attr(syscall.IFLA_MASTER+100, []byte{1}), // unknown attributes are skipped
		attr(syscall.IFLA_MTU, []byte{1}),        // short values do not panic
	})
	want := net.Interface{
		Index: 5, MTU: 9000, Name: "eth2", HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0, 5},
		Flags: net.FlagUp | net.FlagRunning | net.FlagBroadcast | net.FlagMulticast,
	}
	if diff := cmp.Diff(want, l.ifi); diff != "" {
		t.Errorf("interface (-want +got):\n%s", diff)
	}
	if l.master != 4 || !carrier(l.flags) {
		t.Errorf("master = %d, carrier = %v; want 4, true", l.master, carrier(l.flags))
	}
	if carrier(unix.IFF_UP) || carrier(unix.IFF_LOWER_UP) {
		t.Error("carrier without both IFF_UP and IFF_LOWER_UP")
	}
}
