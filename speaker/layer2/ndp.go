package layer2

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
)

// decideNDP is the per-frame decision for IPv6: frame is an Ethernet frame
// read from the interface with MAC mac. It answers Neighbor Solicitations
// (RFC 4861 section 7.2.4) for owned targets, whether they arrived on the
// solicited-node multicast group or as unicast neighbour-unreachability
// probes, and returns the Neighbor Advertisement frame to send. It reports
// as verdictConflict, with the claim, a Neighbor Advertisement for an owned
// target carrying another MAC, and a solicitation sent from an owned
// address with another MAC as its source link-layer address: receivers
// store either binding (RFC 4861 7.2.3 and 7.2.5).
//
// The responder reads raw frames instead of using an ICMPv6 socket because
// a unicast NS is addressed to the VIP itself, which is not configured on
// any interface: the kernel would drop it before an ICMPv6 socket saw it,
// and a client whose unicast probes go unanswered drops its cache entry and
// loses traffic until it solicits again by multicast.
func decideNDP(frame []byte, mac net.HardwareAddr, owned addrSet) (verdict, []byte, claim) {
	_, ethSrc, et, pkt, ok := ethHeader(frame)
	if !ok {
		return verdictMalformed, nil, claim{}
	}
	if et != etherTypeIPv6 {
		return verdictIgnored, nil, claim{}
	}
	if sameMAC(ethSrc, mac) {
		return verdictIgnored, nil, claim{}
	}

	if len(pkt) < ipv6HeaderLen || pkt[0]>>4 != 6 {
		return verdictMalformed, nil, claim{}
	}
	plen := int(binary.BigEndian.Uint16(pkt[4:6]))
	if ipv6HeaderLen+plen > len(pkt) {
		return verdictMalformed, nil, claim{}
	}
	if pkt[6] != protoICMPv6 {
		// NS never carries extension headers in practice; anything else is
		// other IPv6 traffic the socket filter let through.
		return verdictIgnored, nil, claim{}
	}
	src := netip.AddrFrom16([16]byte(pkt[8:24]))
	dst := netip.AddrFrom16([16]byte(pkt[24:40]))
	if src.IsMulticast() {
		return verdictMalformed, nil, claim{}
	}
	// Trim Ethernet padding: the IPv6 payload length is authoritative.
	msg := pkt[ipv6HeaderLen : ipv6HeaderLen+plen]

	if len(msg) < 4 {
		return verdictMalformed, nil, claim{}
	}
	if msg[0] != icmpTypeNS && msg[0] != icmpTypeNA {
		return verdictIgnored, nil, claim{}
	}
	// RFC 4861 7.1.1 and 7.1.2: hop limit 255 proves the sender is on-link,
	// code 0, and the message holds at least the 16-byte target. Receivers
	// drop anything else, so it could not claim an address either.
	if pkt[7] != ndpHopLimit || msg[1] != 0 || len(msg) < 24 {
		return verdictMalformed, nil, claim{}
	}
	target := netip.AddrFrom16([16]byte(msg[8:24]))
	if target.IsMulticast() || target.Is4In6() {
		return verdictMalformed, nil, claim{}
	}
	if msg[0] == icmpTypeNA {
		return decideNA(mac, owned, src, dst, target, msg)
	}
	// Most solicitations on a LAN are for other hosts. Rejecting them on the
	// raw target, before the checksum and option parsing (which allocate),
	// keeps the common case cheap; the price is that a corrupt NS for an
	// address we do not own counts as a request, not as malformed.
	fromOwned := owned.has(src)
	if !owned.has(target) && !fromOwned {
		return verdictRequest, nil, claim{}
	}
	if !validICMPv6Checksum(src, dst, msg) {
		return verdictMalformed, nil, claim{}
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		return verdictMalformed, nil, claim{}
	}
	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok || ns.TargetAddress != target {
		return verdictMalformed, nil, claim{}
	}
	if fromOwned {
		// A host using an owned address as its source: its source
		// link-layer address is what the receiver stores for that address.
		// Not answered, as for ARP; the defence announcements reply.
		if lla := linkLayerAddr(ns.Options, ndp.Source); isUnicastMAC(lla) && !sameMAC(lla, mac) {
			return verdictConflict, nil, claim{ip: src, mac: [6]byte(lla)}
		}
		if !owned.has(target) {
			return verdictRequest, nil, claim{}
		}
	}
	snm, err := ndp.SolicitedNodeMulticast(target)
	if err != nil {
		return verdictMalformed, nil, claim{}
	}
	dad := src.IsUnspecified()
	if dad && (dst != snm || linkLayerAddr(ns.Options, ndp.Source) != nil) {
		// RFC 4861 7.1.1: a DAD probe goes to the solicited-node group and
		// carries no source link-layer address.
		return verdictMalformed, nil, claim{}
	}
	if dst != snm && dst != target {
		return verdictIgnored, nil, claim{}
	}

	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: target,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
	if dad {
		// RFC 4861 7.2.4: someone probing our address gets told, on
		// all-nodes and unsolicited, that it is taken.
		return verdictAnswer, marshalNA(na, mac, allNodesMAC, allNodes), claim{}
	}
	if !isUnicastMAC(ethSrc) {
		return verdictRequest, nil, claim{}
	}
	na.Solicited = true
	return verdictAnswer, marshalNA(na, mac, ethSrc, src), claim{}
}

// decideNA is decideNDP for a Neighbor Advertisement whose fixed fields
// have been checked: it is a conflict when the target is owned and the
// advertisement binds it to another unicast MAC. An NA without a target
// link-layer address only confirms an existing entry (RFC 4861 7.2.5), so
// it moves no neighbour and is ignored.
func decideNA(mac net.HardwareAddr, owned addrSet, src, dst, target netip.Addr, msg []byte) (verdict, []byte, claim) {
	// NAs for other hosts' addresses are dropped on the raw target, before
	// the checksum and parsing, as solicitations are.
	if !owned.has(target) {
		return verdictIgnored, nil, claim{}
	}
	if !validICMPv6Checksum(src, dst, msg) {
		return verdictMalformed, nil, claim{}
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		return verdictMalformed, nil, claim{}
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok || na.TargetAddress != target {
		return verdictMalformed, nil, claim{}
	}
	lla := linkLayerAddr(na.Options, ndp.Target)
	if !isUnicastMAC(lla) || sameMAC(lla, mac) {
		return verdictIgnored, nil, claim{}
	}
	return verdictConflict, nil, claim{ip: target, mac: [6]byte(lla)}
}

// unsolicitedNA returns the announcement sent when ip is gained: Override set
// so that neighbours replace a stale entry, Solicited clear because nobody
// asked (RFC 4861 7.2.6), to all-nodes.
func unsolicitedNA(mac net.HardwareAddr, ip netip.Addr) []byte {
	return marshalNA(&ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}, mac, allNodesMAC, allNodes)
}

// marshalNA builds the complete Ethernet frame for na. The IPv6 source is the
// target address itself, as a host that had the VIP configured would use: it
// needs no address on the interface (so it works before a link-local address
// is ready) and receivers do not check it against anything.
func marshalNA(na *ndp.NeighborAdvertisement, mac, ethDst net.HardwareAddr, dst netip.Addr) []byte {
	src := na.TargetAddress
	body, err := ndp.MarshalMessageChecksum(na, src, dst)
	if err != nil {
		// Only an invalid target or MAC makes this fail, and both were
		// validated by the caller; an empty frame is never sent.
		return nil
	}
	b := make([]byte, 0, ethHeaderLen+ipv6HeaderLen+len(body))
	b = appendEthHeader(b, ethDst, mac, etherTypeIPv6)
	b = append(b, 6<<4, 0, 0, 0) // version 6, traffic class 0, flow label 0
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	b = append(b, protoICMPv6, ndpHopLimit)
	s16, d16 := src.As16(), dst.As16()
	b = append(b, s16[:]...)
	b = append(b, d16[:]...)
	return append(b, body...)
}

// linkLayerAddr returns the first link-layer address option of direction
// d, or nil. Its length is whatever the sender wrote: callers check it
// (isUnicastMAC) before using it as a MAC.
func linkLayerAddr(opts []ndp.Option, d ndp.Direction) net.HardwareAddr {
	for _, o := range opts {
		if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == d {
			return l.Addr
		}
	}
	return nil
}

// validICMPv6Checksum verifies the ICMPv6 checksum over the IPv6
// pseudo-header (RFC 8200 section 8.1). A raw packet socket sees frames
// before the kernel has checked anything, so this is ours to do.
func validICMPv6Checksum(src, dst netip.Addr, msg []byte) bool {
	return icmpv6Sum(src, dst, msg) == 0xffff
}

// icmpv6Sum is the folded ones' complement sum of the pseudo-header and msg.
// Over a message whose checksum field is zero, its complement is the
// checksum to put there.
func icmpv6Sum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(b[0])<<8 | uint32(b[1])
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	sum += uint32(len(msg)>>16) + uint32(len(msg)&0xffff)
	sum += protoICMPv6
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
