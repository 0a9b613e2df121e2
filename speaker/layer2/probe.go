package layer2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"golang.org/x/time/rate"
)

// Asking the LAN who holds an address: Check (one question, for the
// speaker's self-checks of addresses other nodes announce) and Probe
// (RFC 5227 ARP probes and IPv6 duplicate address detection, before this
// node announces an address for the first time). Both send through the
// responders' packet sockets and hear the answers on their read loops, so
// neither opens a socket, and neither can send on an interface the
// Announcer does not manage.

// Defaults for Options.CheckTimeout and Options.ProbeRate, and the probe
// schedule.
const (
	// DefaultCheckTimeout is how long Check waits for answers after
	// sending its question. Hosts on a LAN answer within a millisecond or
	// two; the margin covers a loaded node.
	DefaultCheckTimeout = 200 * time.Millisecond

	// DefaultProbeRate bounds the question frames (checks and probes) one
	// interface sends per second; up to as many may go out at once. It is
	// shared by Check and Probe: a speaker given a hundred new addresses
	// at once spreads their probes over three seconds rather than send a
	// storm of broadcasts. Answers, announcements and defences are not
	// counted here (see DefaultDefendInterval for those).
	DefaultProbeRate = 100

	// ProbeNum probes are sent ProbeInterval apart, and the probe ends
	// ProbeWait after the last one: 700 ms in all, 0.7 s of extra latency
	// before a new address is first announced. RFC 5227 spends 6 to 9
	// seconds (random wait, three probes 1-2 s apart, then 2 s) because
	// it serves hosts that configure themselves at boot; a load balancer
	// gets a new address while a user waits, and a LAN host that holds
	// the address answers within milliseconds, so three tries cover lost
	// frames without the long waits.
	ProbeNum      = 3
	ProbeInterval = 200 * time.Millisecond
	ProbeWait     = 300 * time.Millisecond
)

// ErrNotManaged is returned by Check for an interface the Announcer does
// not manage (not passed to SetInterfaces, or its sockets are not open):
// nothing is ever sent on such an interface.
var ErrNotManaged = errors.New("layer2: interface not managed")

// ErrNoSocket is returned by Check when the interface's responder runs
// without the socket for the address's family (Conns.ARP or Conns.NDP nil).
var ErrNoSocket = errors.New("layer2: no socket for the address family")

// answerKind is what one frame says about an address being asked about.
type answerKind uint8

const (
	// answerNone: the frame says nothing about the address.
	answerNone answerKind = iota
	// answerHolder: a host asserts it holds the address: an ARP reply or
	// request sent from it (gratuitous ARP included), a Neighbor
	// Advertisement for it, a Neighbor Solicitation sent from it.
	answerHolder
	// answerProbe: another host probes for the address at the same time
	// (an ARP probe, sender 0.0.0.0; a DAD Neighbor Solicitation, from
	// ::). RFC 5227 section 2.1.1 and RFC 4862 section 5.4.3 count it as a
	// conflict for both probers, so that neither takes the address.
	answerProbe
)

// decodeAnswer is the per-frame decision for checks and probes: it reports
// whether frame, read from the interface with MAC mac, is a host answering
// for target or probing for it, and that host's MAC (the one neighbours
// would learn: the ARP sender hardware address, the NA's target link-layer
// address, otherwise the Ethernet source). Frames this interface sent,
// malformed frames and answers naming a MAC that is not unicast give
// answerNone.
//
// It is pure, so the table tests and the fuzz target exercise exactly what
// the read loops run.
func decodeAnswer(frame []byte, mac net.HardwareAddr, target netip.Addr) (answerKind, [macLen]byte) {
	_, src, et, payload, ok := ethHeader(frame)
	if !ok || sameMAC(src, mac) {
		return answerNone, [macLen]byte{}
	}
	switch {
	case et == etherTypeARP && target.Is4():
		return decodeARPAnswer(payload, mac, target)
	case et == etherTypeIPv6 && target.Is6():
		return decodeNDPAnswer(src, payload, mac, target)
	}
	return answerNone, [macLen]byte{}
}

func decodeARPAnswer(payload []byte, mac net.HardwareAddr, target netip.Addr) (answerKind, [macLen]byte) {
	if len(payload) < arpPacketLen ||
		binary.BigEndian.Uint16(payload[0:2]) != arpHardwareEthernet ||
		binary.BigEndian.Uint16(payload[2:4]) != etherTypeIPv4 ||
		payload[4] != macLen || payload[5] != 4 {
		return answerNone, [macLen]byte{}
	}
	op := arp.Operation(binary.BigEndian.Uint16(payload[6:8]))
	if op != arp.OperationRequest && op != arp.OperationReply {
		return answerNone, [macLen]byte{}
	}
	sender := net.HardwareAddr(payload[8:14])
	if !isUnicastMAC(sender) || sameMAC(sender, mac) {
		return answerNone, [macLen]byte{}
	}
	senderIP := netip.AddrFrom4([4]byte(payload[14:18]))
	targetIP := netip.AddrFrom4([4]byte(payload[24:28]))
	switch {
	case senderIP == target:
		return answerHolder, [macLen]byte(sender)
	case op == arp.OperationRequest && senderIP.IsUnspecified() && targetIP == target:
		return answerProbe, [macLen]byte(sender)
	}
	return answerNone, [macLen]byte{}
}

func decodeNDPAnswer(ethSrc net.HardwareAddr, pkt []byte, mac net.HardwareAddr, target netip.Addr) (answerKind, [macLen]byte) {
	if len(pkt) < ipv6HeaderLen || pkt[0]>>4 != 6 || pkt[6] != protoICMPv6 || pkt[7] != ndpHopLimit {
		return answerNone, [macLen]byte{}
	}
	plen := int(binary.BigEndian.Uint16(pkt[4:6]))
	if ipv6HeaderLen+plen > len(pkt) {
		return answerNone, [macLen]byte{}
	}
	msg := pkt[ipv6HeaderLen : ipv6HeaderLen+plen]
	if len(msg) < 24 || (msg[0] != icmpTypeNS && msg[0] != icmpTypeNA) || msg[1] != 0 {
		return answerNone, [macLen]byte{}
	}
	// Frames about other addresses are dropped on the raw target, before
	// the checksum and parsing, which allocate.
	if netip.AddrFrom16([16]byte(msg[8:24])) != target {
		return answerNone, [macLen]byte{}
	}
	src := netip.AddrFrom16([16]byte(pkt[8:24]))
	dst := netip.AddrFrom16([16]byte(pkt[24:40]))
	if src.IsMulticast() || !validICMPv6Checksum(src, dst, msg) {
		return answerNone, [macLen]byte{}
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		return answerNone, [macLen]byte{}
	}
	pick := func(opt net.HardwareAddr) (net.HardwareAddr, bool) {
		if opt != nil {
			// A link-layer address option is what the receiver stores;
			// one that is not a unicast MAC makes the frame bogus.
			return opt, isUnicastMAC(opt) && !sameMAC(opt, mac)
		}
		return ethSrc, isUnicastMAC(ethSrc)
	}
	switch m := m.(type) {
	case *ndp.NeighborAdvertisement:
		if m.TargetAddress != target {
			return answerNone, [macLen]byte{}
		}
		if who, ok := pick(linkLayerAddr(m.Options, ndp.Target)); ok {
			return answerHolder, [macLen]byte(who)
		}
	case *ndp.NeighborSolicitation:
		if m.TargetAddress != target {
			return answerNone, [macLen]byte{}
		}
		lla := linkLayerAddr(m.Options, ndp.Source)
		switch {
		case src.IsUnspecified() && lla == nil && isUnicastMAC(ethSrc):
			// RFC 4862 5.4.3: another node's DAD for the address.
			return answerProbe, [macLen]byte(ethSrc)
		case src == target:
			if who, ok := pick(lla); ok {
				return answerHolder, [macLen]byte(who)
			}
		}
	}
	return answerNone, [macLen]byte{}
}

// listener is one Check or Probe waiting for answers on a responder. The
// read loops send each answer's MAC on found without blocking; answers
// beyond its buffer are dropped, which costs nothing as long as one MAC
// arrives (the same MAC answering again adds nothing).
type listener struct {
	ip     netip.Addr
	probes bool // answerProbe counts too
	found  chan [macLen]byte
}

// listen registers l on r; the returned function unregisters it.
func (r *responder) listen(l *listener) func() {
	r.lmu.Lock()
	defer r.lmu.Unlock()
	cur := r.listeners.Load()
	var next []*listener
	if cur != nil {
		next = slices.Clone(*cur)
	}
	next = append(next, l)
	r.listeners.Store(&next)
	return func() {
		r.lmu.Lock()
		defer r.lmu.Unlock()
		cur := *r.listeners.Load()
		next := slices.DeleteFunc(slices.Clone(cur), func(x *listener) bool { return x == l })
		r.listeners.Store(&next)
	}
}

// hear hands frame to the listeners it answers. It runs on the read loops
// only while a check or probe is under way.
func (r *responder) hear(frame []byte, ls []*listener) {
	for _, l := range ls {
		kind, who := decodeAnswer(frame, r.ifi.HardwareAddr, l.ip)
		if kind == answerNone || (kind == answerProbe && !l.probes) || r.defence.sibling(who) {
			continue
		}
		select {
		case l.found <- who:
		default:
		}
	}
}

// Check asks the LAN once who answers for ip on the managed interface
// iface, and returns the distinct MACs that answered within
// Options.CheckTimeout, this node's own MACs left out (its own responder
// never answers its own question either). It is the primitive for
// self-checks: asked about an address another node announces, it returns
// that node's MAC, nothing when nobody answers, and more than one MAC when
// several hosts claim the address.
//
// The question is one ARP request for IPv4, sent from an IPv4 address of
// iface (an ARP probe, from 0.0.0.0, when it has none), or one Neighbor
// Solicitation for IPv6, sent from iface's link-local address to ip's
// solicited-node multicast group (a DAD-style solicitation from :: when it
// has no link-local address yet). It goes through the responder's packet
// sockets and counts against Options.ProbeRate: a Check waits for a token,
// or returns ctx's error if ctx ends first.
//
// Errors: ErrNotManaged for an interface without a running responder,
// ErrNoSocket when the responder has no socket of ip's family, ErrClosed
// after Close. Check is safe for concurrent use.
func (a *Announcer) Check(ctx context.Context, ip netip.Addr, iface string) ([]net.HardwareAddr, error) {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() {
		return nil, fmt.Errorf("layer2: cannot check %s: not a unicast address", ip)
	}
	a.mu.Lock()
	if a.closed || a.ctx.Err() != nil {
		a.mu.Unlock()
		return nil, ErrClosed
	}
	r, ok := a.responders[iface]
	a.mu.Unlock()
	if !ok || r.broken.Load() {
		return nil, fmt.Errorf("%w: %s", ErrNotManaged, iface)
	}
	frame, conn, err := a.question(r, ip)
	if err != nil {
		return nil, err
	}
	return a.ask(ctx, ip, false, []asking{{r, conn, frame}}, 1, 0, a.checkTimeout, nil)
}

// sourcesFor is how long Check reuses the addresses it read from an
// interface for the source of its questions. A speaker checks up to 16
// addresses in a round every 10 s; reading the addresses for each (a
// netlink dump: half a dozen system calls and a parse) was a third of the
// cost of a check. A source a few seconds stale is harmless: the reply
// goes to the MAC, and an address that left the interface only makes the
// owner answer to a sender that no longer holds it.
const sourcesFor = 5 * time.Second

// sources is the cached result of Options.InterfaceAddrs for one
// responder.
type sources struct {
	at    time.Time
	addrs []netip.Addr
}

// sourcesOf returns r's interface addresses, read at most every sourcesFor.
func (a *Announcer) sourcesOf(r *responder) ([]netip.Addr, error) {
	now := time.Now()
	if c := r.sources.Load(); c != nil && now.Sub(c.at) < sourcesFor {
		return c.addrs, nil
	}
	addrs, err := a.ifaceAddrs(&r.ifi)
	if err != nil {
		return nil, err
	}
	r.sources.Store(&sources{at: now, addrs: addrs})
	return addrs, nil
}

// question builds Check's question for ip on r.
func (a *Announcer) question(r *responder, ip netip.Addr) ([]byte, net.PacketConn, error) {
	addrs, err := a.sourcesOf(r)
	if err != nil {
		return nil, nil, fmt.Errorf("layer2: addresses of %s: %w", r.ifi.Name, err)
	}
	if ip.Is4() {
		if r.conns.ARP == nil {
			return nil, nil, fmt.Errorf("%w: ARP on %s", ErrNoSocket, r.ifi.Name)
		}
		from := netip.IPv4Unspecified()
		for _, x := range addrs {
			if x = x.Unmap(); x.Is4() && x != ip && !x.IsLoopback() {
				from = x
				break
			}
		}
		return marshalARP(nil, arp.OperationRequest, broadcastMAC, r.ifi.HardwareAddr, from, zeroMAC, ip), r.conns.ARP, nil
	}
	if r.conns.NDP == nil {
		return nil, nil, fmt.Errorf("%w: NDP on %s", ErrNoSocket, r.ifi.Name)
	}
	from := netip.IPv6Unspecified()
	for _, x := range addrs {
		if x.Is6() && x.IsLinkLocalUnicast() {
			from = x.WithZone("")
			break
		}
	}
	f, err := solicitation(r.ifi.HardwareAddr, from, ip)
	return f, r.conns.NDP, err
}

// solicitation builds a Neighbor Solicitation for target from src to
// target's solicited-node group; from :: it is a DAD probe, which carries
// no source link-layer address (RFC 4861 7.1.1).
func solicitation(mac net.HardwareAddr, src, target netip.Addr) ([]byte, error) {
	group, err := ndp.SolicitedNodeMulticast(target)
	if err != nil {
		return nil, err
	}
	ns := &ndp.NeighborSolicitation{TargetAddress: target}
	if !src.IsUnspecified() {
		ns.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}
	}
	body, err := ndp.MarshalMessageChecksum(ns, src, group)
	if err != nil {
		return nil, err
	}
	g := group.As16()
	b := make([]byte, 0, ethHeaderLen+ipv6HeaderLen+len(body))
	b = appendEthHeader(b, net.HardwareAddr{0x33, 0x33, g[12], g[13], g[14], g[15]}, mac, etherTypeIPv6)
	b = append(b, 6<<4, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	b = append(b, protoICMPv6, ndpHopLimit)
	s16 := src.As16()
	b = append(b, s16[:]...)
	b = append(b, g[:]...)
	return append(b, body...), nil
}

// Probe checks that nobody on the LAN uses ip before this node announces
// it for the first time: ProbeNum RFC 5227 ARP probes (sender IP 0.0.0.0,
// sender MAC the interface's, target ip) for IPv4, or ProbeNum duplicate
// address detection solicitations (from :: to ip's solicited-node group;
// the group is joined meanwhile, to hear another node's DAD) for IPv6,
// ProbeInterval apart on every managed interface that ifaces allows (nil:
// all), then ProbeWait for late answers. It returns the distinct MACs
// that answered for ip (an ARP reply or request sent from ip, a Neighbor
// Advertisement for it) or probed for it at the same time, this node's own
// left out. Probe ends early, after the first answer from a MAC that
// Options.Peer does not claim: that is a conflict already, and the host
// needs no more frames. Without answers it takes ProbeInterval*(ProbeNum-1)
// + ProbeWait (0.7 s), plus any wait for Options.ProbeRate.
//
// It is safe for concurrent use, also with SetOwned: a probe does not
// make the responders answer for ip.
func (a *Announcer) Probe(ctx context.Context, ip netip.Addr, ifaces []string) ([]net.HardwareAddr, error) {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLoopback() {
		return nil, fmt.Errorf("layer2: cannot probe %s: not a unicast address", ip)
	}
	a.mu.Lock()
	if a.closed || a.ctx.Err() != nil {
		a.mu.Unlock()
		return nil, ErrClosed
	}
	var targets []asking
	var joined []*responder
	for name, r := range a.responders {
		if ifaces != nil && !slices.Contains(ifaces, name) || r.broken.Load() {
			continue
		}
		var f []byte
		var conn net.PacketConn
		if ip.Is4() && r.conns.ARP != nil {
			f, conn = marshalARP(nil, arp.OperationRequest, broadcastMAC, r.ifi.HardwareAddr, netip.IPv4Unspecified(), zeroMAC, ip), r.conns.ARP
		} else if ip.Is6() && r.conns.NDP != nil {
			var err error
			if f, err = solicitation(r.ifi.HardwareAddr, netip.IPv6Unspecified(), ip); err != nil {
				continue
			}
			conn = r.conns.NDP
			if r.conns.Groups != nil && r.join(ip) == nil {
				joined = append(joined, r)
			}
		} else {
			continue
		}
		targets = append(targets, asking{r, conn, f})
	}
	a.mu.Unlock()
	defer func() {
		if len(joined) == 0 {
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, r := range joined {
			_ = r.leave(ip) // a stopped responder's socket is closed already
		}
	}()
	if len(targets) == 0 {
		return nil, nil
	}
	stop := func(mac net.HardwareAddr) bool { return a.defence.peer == nil || !a.defence.peer(mac) }
	return a.ask(ctx, ip, true, targets, ProbeNum, ProbeInterval, ProbeWait, stop)
}

// asking is one question frame to send on one responder's socket.
type asking struct {
	r     *responder
	conn  net.PacketConn
	frame []byte
}

// ask sends each target's frame n times, every apart, then waits wait
// after the last, and returns the distinct MACs heard answering for ip,
// ending early when stop accepts one.
func (a *Announcer) ask(ctx context.Context, ip netip.Addr, probes bool, targets []asking, n int, every, wait time.Duration, stop func(net.HardwareAddr) bool) ([]net.HardwareAddr, error) {
	l := &listener{ip: ip, probes: probes, found: make(chan [macLen]byte, 16)}
	for _, t := range targets {
		defer t.r.listen(l)()
	}
	var seen []net.HardwareAddr
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	// heard records a MAC and reports whether the exchange may end.
	heard := func(m [macLen]byte) bool {
		mac := net.HardwareAddr(m[:])
		if !slices.ContainsFunc(seen, func(x net.HardwareAddr) bool { return sameMAC(x, mac) }) {
			seen = append(seen, slices.Clone(mac))
		}
		return stop != nil && stop(mac)
	}
	for i := range n {
		for _, t := range targets {
			if err := t.r.limiter.Wait(ctx); err != nil {
				return seen, err
			}
			if t.r.ctx.Err() != nil {
				continue // stopped meanwhile: its socket is gone
			}
			if t.r.send(t.conn, t.frame) {
				t.r.family(ip).probes.Add(1)
			} else {
				t.r.family(ip).sendErrors.Add(1)
			}
		}
		d := every
		if i == n-1 {
			d = wait
		}
		timer.Reset(d)
	wait:
		for {
			select {
			case <-ctx.Done():
				return seen, ctx.Err()
			case <-a.ctx.Done():
				return seen, ErrClosed
			case m := <-l.found:
				if heard(m) {
					return seen, nil
				}
			case <-timer.C:
				break wait
			}
		}
	}
	return seen, nil
}

// family returns r's counters for ip's family.
func (r *responder) family(ip netip.Addr) *familyCounters {
	if ip.Is4() {
		return &r.stats.arp
	}
	return &r.stats.ndp
}

// newLimiter returns the question-rate limiter of one interface.
func newLimiter(perSecond int) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(perSecond), perSecond)
}

// interfaceAddrs lists ifi's addresses in the calling thread's network
// namespace; the default for Options.InterfaceAddrs.
func interfaceAddrs(ifi *net.Interface) ([]netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out, nil
}
