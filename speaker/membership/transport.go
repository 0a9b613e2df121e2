package membership

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
)

// transport is memberlist's UDP and TCP transport, written for a speaker's
// idle cost. memberlist's own NetTransport allocates a fresh 64 KiB buffer
// for every packet it receives: at the speaker's probe rate (about twenty
// pings and acks a second, each under 200 bytes) that was 1.3 MB/s of
// garbage and a fifth of an idle speaker's CPU in garbage collection
// (profile of a lab speaker). This one reads into one buffer and copies
// out each packet at its own size. Sends parse the address without the
// resolver and write without allocating. On Linux both go through
// non-blocking raw system calls, which do not wake the Go runtime's
// monitor thread (rawudp_linux.go): that took an idle lab speaker from
// 1.08 % to 0.76 % of a core. What memberlist sees is the same:
// packets with their source address and receive time, and TCP streams for
// push/pull and joins.
type transport struct {
	udp  *net.UDPConn
	raw  *rawUDP
	tcp  *net.TCPListener
	port int
	log  logr.Logger

	packets chan *memberlist.Packet
	streams chan net.Conn

	closed atomic.Bool
	done   chan struct{} // closed by Shutdown
	wg     sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// udpRecvBuf is the receive buffer asked of the kernel (it caps it at
// net.core.rmem_max): bursts of gossip after a failure must not be
// dropped while memberlist is busy. memberlist's NetTransport asks for
// the same.
const udpRecvBuf = 2 * 1024 * 1024

// maxPacket is the largest UDP payload there is.
const maxPacket = 65536

// listen binds TCP and UDP on the same port of addr; port 0 picks a free
// port (the TCP one, which UDP then takes too).
func listen(addr string, port int, log logr.Logger) (*transport, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("bind address %q is not an IP address", addr)
	}
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
	if err != nil {
		return nil, fmt.Errorf("listening on TCP %s: %w", net.JoinHostPort(addr, strconv.Itoa(port)), err)
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
	if err != nil {
		_ = tcp.Close()
		return nil, fmt.Errorf("listening on UDP %s: %w", net.JoinHostPort(addr, strconv.Itoa(port)), err)
	}
	if err := udp.SetReadBuffer(udpRecvBuf); err != nil {
		log.Info("Cannot enlarge the UDP receive buffer; bursts of gossip may be dropped", "err", err.Error())
	}
	raw, err := newRawUDP(udp)
	if err != nil {
		_, _ = udp.Close(), tcp.Close()
		return nil, fmt.Errorf("UDP %s: %w", net.JoinHostPort(addr, strconv.Itoa(port)), err)
	}
	t := &transport{
		udp: udp, raw: raw, tcp: tcp, port: port, log: log,
		packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.accept()
	return t, nil
}

// FinalAdvertiseAddr returns the address given to memberlist, or the bound
// one. An unspecified bound address (0.0.0.0) needs an AdvertiseAddr:
// guessing one of the host's addresses is how a member ends up announcing
// an address the others cannot reach.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if port == 0 {
		port = t.port
	}
	if ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP address", ip)
		}
		return net.IP(a.Unmap().AsSlice()), port, nil
	}
	bound := t.udp.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	if bound.IsUnspecified() {
		return nil, 0, errors.New("bound to an unspecified address and no advertise address given; set AdvertiseAddr to the address the other members reach this one at")
	}
	return net.IP(bound.AsSlice()), port, nil
}

// readPackets hands every datagram to memberlist, copied out of the one
// read buffer at its own length.
func (t *transport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, err := t.raw.readFrom(buf)
		at := time.Now()
		if err != nil {
			if t.closed.Load() {
				return
			}
			t.log.Error(err, "Reading a memberlist packet")
			continue
		}
		if n < 1 {
			continue // memberlist would reject it too: no message type
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		p := &memberlist.Packet{
			Buf:       append([]byte(nil), buf[:n]...),
			From:      net.UDPAddrFromAddrPort(from),
			Timestamp: at,
		}
		select {
		case t.packets <- p:
		case <-t.done:
			return
		}
	}
}

// accept hands every TCP connection to memberlist. Errors other than the
// close back off (a full file table would otherwise spin the loop).
func (t *transport) accept() {
	defer t.wg.Done()
	const (
		minDelay = 5 * time.Millisecond
		maxDelay = time.Second
	)
	delay := time.Duration(0)
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closed.Load() {
				return
			}
			delay = min(max(2*delay, minDelay), maxDelay)
			t.log.Error(err, "Accepting a memberlist connection", "retryIn", delay)
			select {
			case <-time.After(delay):
			case <-t.done:
				return
			}
			continue
		}
		delay = 0
		select {
		case t.streams <- c:
		case <-t.done:
			_ = c.Close()
			return
		}
	}
}

func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *transport) StreamCh() <-chan net.Conn           { return t.streams }

// WriteTo sends one packet to addr (host:port, an IP in practice: members
// advertise IPs).
func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		ua, rerr := net.ResolveUDPAddr("udp", addr)
		if rerr != nil {
			return time.Time{}, rerr
		}
		ap = ua.AddrPort()
	}
	return time.Now(), t.raw.writeTo(b, ap)
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// Shutdown closes both sockets and waits for the loops; a packet or
// connection that memberlist no longer takes is dropped.
func (t *transport) Shutdown() error {
	if t.closed.Swap(true) {
		return nil
	}
	close(t.done)
	err := errors.Join(t.udp.Close(), t.tcp.Close())
	t.wg.Wait()
	return err
}
