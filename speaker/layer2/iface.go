package layer2

import (
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// link is what the eligibility rules need to know about one interface.
type link struct {
	ifi    net.Interface
	flags  uint32 // raw IFF_* flags, which net.Flags does not fully carry
	master int    // index of the bond or bridge this link is enslaved to, 0 if none
}

// Interfaces returns the interfaces a speaker should answer on: up, not
// loopback, ARP-capable (an Ethernet MAC and no NOARP flag) and not a member
// of a bond or bridge. A member's frames belong to its master, which is the
// interface that carries the node's addresses and is returned instead; an
// answer from the member would go out with the wrong MAC, or twice.
//
// allow, when non-nil, restricts the result to the named interfaces (names
// that do not exist or are not eligible are left out, not an error).
//
// The information comes from one rtnetlink dump rather than /sys/class/net
// (where "master" is a symlink): netlink answers for the network namespace
// of the calling thread, sysfs for the one it was mounted in.
func Interfaces(allow []string) ([]net.Interface, error) {
	links, err := dumpLinks()
	if err != nil {
		return nil, err
	}
	return eligible(links, allow), nil
}

// eligible applies the rules documented on Interfaces.
func eligible(links []link, allow []string) []net.Interface {
	var out []net.Interface
	for _, l := range links {
		switch {
		case allow != nil && !slices.Contains(allow, l.ifi.Name):
		case l.flags&unix.IFF_UP == 0:
		case l.flags&unix.IFF_LOOPBACK != 0:
		case l.flags&unix.IFF_NOARP != 0:
		case !isUnicastMAC(l.ifi.HardwareAddr):
		case l.master != 0:
		default:
			out = append(out, l.ifi)
		}
	}
	return out
}

// HasCarrier reports whether the named interface is administratively up and
// has carrier (IFF_LOWER_UP, which /sys/class/net/NAME/carrier also
// reflects). The speaker stops announcing on an interface that reports
// false, since nobody can hear it and another node should take over.
func HasCarrier(name string) (bool, error) {
	links, err := dumpLinks()
	if err != nil {
		return false, err
	}
	for _, l := range links {
		if l.ifi.Name == name {
			return carrier(l.flags), nil
		}
	}
	return false, fmt.Errorf("layer2: no interface named %q", name)
}

func carrier(flags uint32) bool {
	return flags&unix.IFF_UP != 0 && flags&unix.IFF_LOWER_UP != 0
}

// dumpLinks lists the interfaces of the calling thread's network namespace.
func dumpLinks() ([]link, error) {
	rib, err := syscall.NetlinkRIB(syscall.RTM_GETLINK, syscall.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("layer2: listing interfaces: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return nil, fmt.Errorf("layer2: listing interfaces: %w", err)
	}
	var links []link
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Type != syscall.RTM_NEWLINK || len(m.Data) < syscall.SizeofIfInfomsg {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(m)
		if err != nil {
			return nil, fmt.Errorf("layer2: listing interfaces: %w", err)
		}
		links = append(links, parseLink(m.Data[:syscall.SizeofIfInfomsg], attrs))
	}
	return links, nil
}

// parseLink decodes one RTM_NEWLINK message: hdr is its struct ifinfomsg
// (family, pad, type, index, flags, change, in host byte order).
func parseLink(hdr []byte, attrs []syscall.NetlinkRouteAttr) link {
	flags := binary.NativeEndian.Uint32(hdr[8:12])
	l := link{flags: flags}
	l.ifi.Index = int(int32(binary.NativeEndian.Uint32(hdr[4:8])))
	l.ifi.Flags = netFlags(flags)
	for _, a := range attrs {
		switch a.Attr.Type {
		case syscall.IFLA_IFNAME:
			name := a.Value
			if i := slices.Index(name, 0); i >= 0 {
				name = name[:i]
			}
			l.ifi.Name = string(name)
		case syscall.IFLA_ADDRESS:
			l.ifi.HardwareAddr = net.HardwareAddr(slices.Clone(a.Value))
		case syscall.IFLA_MTU:
			if len(a.Value) >= 4 {
				l.ifi.MTU = int(binary.NativeEndian.Uint32(a.Value))
			}
		case syscall.IFLA_MASTER:
			if len(a.Value) >= 4 {
				l.master = int(binary.NativeEndian.Uint32(a.Value))
			}
		}
	}
	return l
}

// netFlags maps IFF_* flags to net.Flags the way package net does, so the
// returned net.Interface looks like one from net.InterfaceByName.
func netFlags(f uint32) net.Flags {
	var n net.Flags
	if f&unix.IFF_UP != 0 {
		n |= net.FlagUp
	}
	if f&unix.IFF_RUNNING != 0 {
		n |= net.FlagRunning
	}
	if f&unix.IFF_BROADCAST != 0 {
		n |= net.FlagBroadcast
	}
	if f&unix.IFF_LOOPBACK != 0 {
		n |= net.FlagLoopback
	}
	if f&unix.IFF_POINTOPOINT != 0 {
		n |= net.FlagPointToPoint
	}
	if f&unix.IFF_MULTICAST != 0 {
		n |= net.FlagMulticast
	}
	return n
}

// WithGlobalAddress keeps the interfaces that carry a global unicast
// address. Without an allow-list this is what tells the node's LAN NICs
// from the host ends of pod veths, which can ARP too but lead only to
// pods: answering there would cost sockets per pod and spray gratuitous
// ARP into every pod.
func WithGlobalAddress(ifis []net.Interface) []net.Interface {
	var out []net.Interface
	for _, ifi := range ifis {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		if slices.ContainsFunc(addrs, func(a net.Addr) bool {
			ipn, ok := a.(*net.IPNet)
			return ok && ipn.IP.IsGlobalUnicast()
		}) {
			out = append(out, ifi)
		}
	}
	return out
}
