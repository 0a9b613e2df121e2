package layer2

import (
	"bytes"
	"net"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/mdlayher/packet"

	"github.com/ironlb/ironlb/speaker/internal/rawsock"
)

// rawConn is a packet socket whose reads and writes are raw non-blocking
// system calls (package rawsock) instead of packet.Conn's ordinary ones,
// which wake the Go runtime's monitor thread. A responder reads every ARP
// frame and every Neighbor Solicitation and Advertisement on its LAN,
// twice a frame (the read, then the one that finds the queue empty), and
// sends a refresh for each of its addresses every minute: with 1,000
// addresses that is dozens of calls a second on every node.
type rawConn struct {
	*packet.Conn
	rc      syscall.RawConn
	ifindex int
	proto   uint16
	closed  atomic.Bool
}

// rawCalls wraps c, bound to ifindex for EtherType proto.
func rawCalls(c *packet.Conn, ifindex int, proto uint16) (net.PacketConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: c, rc: rc, ifindex: ifindex, proto: proto}, nil
}

// ReadFrom reads one frame; the address is the sender's hardware address,
// as packet.Conn gives it.
func (c *rawConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if len(b) == 0 {
		return c.Conn.ReadFrom(b)
	}
	var sa syscall.RawSockaddrAny
	n, err := rawsock.Recvfrom(c.rc, b, &sa)
	if err != nil {
		if c.closed.Load() {
			// What packet.Conn returns once closed, which the responder
			// tells from a failing socket.
			err = net.ErrClosed
		}
		return 0, nil, &net.OpError{Op: "read", Net: "packet", Err: err}
	}
	ll := (*syscall.RawSockaddrLinklayer)(unsafe.Pointer(&sa))
	hl := min(int(ll.Halen), len(ll.Addr))
	return n, &packet.Addr{HardwareAddr: net.HardwareAddr(bytes.Clone(ll.Addr[:hl]))}, nil
}

// WriteTo sends one frame (Ethernet header included) to the hardware
// address in addr, a *packet.Addr, as packet.Conn does.
func (c *rawConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	a, ok := addr.(*packet.Addr)
	if !ok || len(a.HardwareAddr) > 8 {
		return c.Conn.WriteTo(b, addr) // its error for a wrong address
	}
	sa := syscall.RawSockaddrLinklayer{
		Family:   syscall.AF_PACKET,
		Protocol: c.proto<<8 | c.proto>>8, // network byte order
		Ifindex:  int32(c.ifindex),
		Halen:    uint8(len(a.HardwareAddr)),
	}
	copy(sa.Addr[:], a.HardwareAddr)
	if err := rawsock.Sendto(c.rc, b, unsafe.Pointer(&sa), syscall.SizeofSockaddrLinklayer); err != nil {
		if c.closed.Load() {
			err = net.ErrClosed
		}
		return 0, &net.OpError{Op: "write", Net: "packet", Err: err}
	}
	return len(b), nil
}

func (c *rawConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}
