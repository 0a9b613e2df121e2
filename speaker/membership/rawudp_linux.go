package membership

import (
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"github.com/ironlb/ironlb/speaker/internal/rawsock"
)

// rawUDP reads and writes the memberlist socket with raw non-blocking
// system calls (package rawsock), which do not wake the Go runtime's
// monitor thread as net.UDPConn's calls do: about sixty of them a second
// in an idle speaker.
type rawUDP struct {
	rc syscall.RawConn
	v6 bool // an AF_INET6 socket: IPv4 peers are written as mapped addresses
}

func newRawUDP(c *net.UDPConn) (*rawUDP, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &rawUDP{rc: rc}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var sa syscall.Sockaddr
		sa, serr = syscall.Getsockname(int(fd))
		_, r.v6 = sa.(*syscall.SockaddrInet6)
	}); err != nil {
		return nil, err
	}
	return r, serr
}

// readFrom reads one datagram into buf (which must not be empty).
func (r *rawUDP) readFrom(buf []byte) (int, netip.AddrPort, error) {
	var sa syscall.RawSockaddrAny
	n, err := rawsock.Recvfrom(r.rc, buf, &sa)
	if err != nil {
		if errno, ok := err.(syscall.Errno); ok {
			err = os.NewSyscallError("recvfrom", errno)
		}
		return 0, netip.AddrPort{}, &net.OpError{Op: "read", Net: "udp", Err: err}
	}
	return n, addrPortOf(&sa), nil
}

// writeTo sends b to to as one datagram.
func (r *rawUDP) writeTo(b []byte, to netip.AddrPort) error {
	var sa4 syscall.RawSockaddrInet4
	var sa6 syscall.RawSockaddrInet6
	var sa unsafe.Pointer
	var salen uintptr
	if a := to.Addr().Unmap(); a.Is4() && !r.v6 {
		sa4.Family = syscall.AF_INET
		sa4.Addr = a.As4()
		putPort(&sa4.Port, to.Port())
		sa, salen = unsafe.Pointer(&sa4), syscall.SizeofSockaddrInet4
	} else {
		sa6.Family = syscall.AF_INET6
		sa6.Addr = a.As16() // an IPv4 address mapped, on a dual-stack socket
		putPort(&sa6.Port, to.Port())
		sa, salen = unsafe.Pointer(&sa6), syscall.SizeofSockaddrInet6
	}
	if err := rawsock.Sendto(r.rc, b, sa, salen); err != nil {
		// As net.UDPConn reports it: memberlist treats a failed write
		// to a peer (*net.OpError, Op "write", Net "udp*") as that
		// peer failing its probe, and a bare errno as nothing at all,
		// so a node whose sends are refused (EPERM from a firewall)
		// would never suspect anyone.
		if errno, ok := err.(syscall.Errno); ok {
			err = os.NewSyscallError("sendto", errno)
		}
		return &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(to), Err: err}
	}
	return nil
}

// putPort stores port in network byte order, as sockaddr_in(6) holds it.
func putPort(dst *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(dst))
	b[0], b[1] = byte(port>>8), byte(port)
}

func addrPortOf(sa *syscall.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case syscall.AF_INET:
		s := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&s.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(p[0])<<8|uint16(p[1]))
	case syscall.AF_INET6:
		s := (*syscall.RawSockaddrInet6)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&s.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(s.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}
