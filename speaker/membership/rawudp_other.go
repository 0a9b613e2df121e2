//go:build !linux

package membership

import (
	"net"
	"net/netip"
)

// rawUDP is net.UDPConn where raw system calls are not written for the
// platform (see rawudp_linux.go).
type rawUDP struct{ c *net.UDPConn }

func newRawUDP(c *net.UDPConn) (*rawUDP, error) { return &rawUDP{c: c}, nil }

func (r *rawUDP) readFrom(buf []byte) (int, netip.AddrPort, error) {
	return r.c.ReadFromUDPAddrPort(buf)
}

func (r *rawUDP) writeTo(b []byte, to netip.AddrPort) error {
	_, err := r.c.WriteToUDPAddrPort(b, to)
	return err
}
