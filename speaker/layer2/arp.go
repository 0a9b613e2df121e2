package layer2

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
)

const (
	// ARP hardware type 1 is Ethernet (RFC 826, IANA "Hardware Types").
	arpHardwareEthernet = 1
	// arpPacketLen is the size of an ARP packet for IPv4 over Ethernet.
	arpPacketLen = 8 + 2*macLen + 2*4
)

// decideARP is the whole per-frame decision for IPv4: given one frame read
// from the interface with MAC mac, and the addresses owned on it, it returns
// what to do and, for verdictAnswer, the reply frame to send; for
// verdictConflict, the claim another host made on an owned address.
//
// It is pure so that the table tests and the fuzz target exercise exactly
// the code the responder runs.
func decideARP(frame []byte, mac net.HardwareAddr, owned addrSet) (verdict, []byte, claim) {
	_, src, et, payload, ok := ethHeader(frame)
	if !ok {
		return verdictMalformed, nil, claim{}
	}
	if et != etherTypeARP {
		// A VLAN-tagged frame or anything else the socket should not have
		// delivered: not ours to interpret.
		return verdictIgnored, nil, claim{}
	}
	if sameMAC(src, mac) {
		// Packet sockets also see frames this host transmits, including
		// the kernel's own ARP requests; never answer ourselves.
		return verdictIgnored, nil, claim{}
	}

	// The fixed part of an IPv4-over-Ethernet ARP packet is checked in place
	// so that requests for other hosts' addresses, nearly all of what a LAN
	// broadcasts, are dropped without allocating.
	if len(payload) < 8 {
		return verdictMalformed, nil, claim{}
	}
	if binary.BigEndian.Uint16(payload[0:2]) != arpHardwareEthernet ||
		binary.BigEndian.Uint16(payload[2:4]) != etherTypeIPv4 ||
		payload[4] != macLen || payload[5] != 4 {
		return verdictMalformed, nil, claim{}
	}
	if len(payload) < arpPacketLen {
		return verdictMalformed, nil, claim{}
	}
	op := arp.Operation(binary.BigEndian.Uint16(payload[6:8]))
	if op != arp.OperationRequest && op != arp.OperationReply {
		return verdictIgnored, nil, claim{}
	}
	// Any request or reply whose sender is an owned address teaches every
	// neighbour that hears it (Linux updates an existing entry from a
	// request as well as from a reply) that the address lives at the
	// sender's MAC: a gratuitous ARP, a reply to someone's request, or a
	// host that has the address configured and asks for its gateway. So
	// each is a claim, whatever its target. The sender's hardware address
	// in the ARP body is what neighbours learn, so that is the claimant;
	// the Ethernet source only filtered out our own transmissions.
	senderMAC := net.HardwareAddr(payload[8:14])
	if owned.has(netip.AddrFrom4([4]byte(payload[14:18]))) {
		if sameMAC(senderMAC, mac) || !isUnicastMAC(senderMAC) {
			// Our own binding relayed by something (a bridge or proxy
			// that rewrote the Ethernet source) is no conflict; a group
			// or zero sender address is bogus and no neighbour stores it.
			return verdictIgnored, nil, claim{}
		}
		// Not answered even when it also asks for an owned address: the
		// sender is claiming ours, and the defence announcements tell it
		// (and everyone else) where the address lives.
		return verdictConflict, nil, claim{ip: netip.AddrFrom4([4]byte(payload[14:18])), mac: [6]byte(senderMAC)}
	}
	if op != arp.OperationRequest {
		return verdictIgnored, nil, claim{}
	}
	if !owned.has(netip.AddrFrom4([4]byte(payload[24:28]))) {
		return verdictRequest, nil, claim{}
	}

	var p arp.Packet
	if err := p.UnmarshalBinary(payload); err != nil {
		return verdictMalformed, nil, claim{}
	}
	if !isUnicastMAC(p.SenderHardwareAddr) {
		return verdictRequest, nil, claim{}
	}

	// RFC 826: swap sender and target, fill in our hardware address and
	// send the reply to the requester's hardware address. A probe (sender
	// IP 0.0.0.0, RFC 5227) is answered the same way, which is how an
	// address in use is defended.
	return verdictAnswer, marshalARP(nil, arp.OperationReply, p.SenderHardwareAddr,
		mac, p.TargetIP, p.SenderHardwareAddr, p.SenderIP), claim{}
}

// gratuitousARP returns the two announcement frames sent when ip is gained.
// Both forms are sent because neighbours differ in which one they accept:
// some stacks only update their cache from requests, others only from
// replies (RFC 5227 section 3 discusses the history).
func gratuitousARP(mac net.HardwareAddr, ip netip.Addr) [][]byte {
	return [][]byte{
		// Request form: target hardware address is ignored, zero by RFC 5227.
		marshalARP(nil, arp.OperationRequest, broadcastMAC, mac, ip, zeroMAC, ip),
		// Reply form: addressed to everyone.
		marshalARP(nil, arp.OperationReply, broadcastMAC, mac, ip, broadcastMAC, ip),
	}
}

// marshalARP appends an Ethernet+ARP frame for IPv4 over Ethernet to b. The
// arp package's Packet is used for the field layout; the inputs are always
// well-formed here, so its errors cannot occur.
func marshalARP(b []byte, op arp.Operation, ethDst, senderMAC net.HardwareAddr, senderIP netip.Addr, targetMAC net.HardwareAddr, targetIP netip.Addr) []byte {
	p := arp.Packet{
		HardwareType:       arpHardwareEthernet,
		ProtocolType:       etherTypeIPv4,
		HardwareAddrLength: macLen,
		IPLength:           4,
		Operation:          op,
		SenderHardwareAddr: senderMAC,
		SenderIP:           senderIP,
		TargetHardwareAddr: targetMAC,
		TargetIP:           targetIP,
	}
	body, _ := p.MarshalBinary() // documented never to fail
	b = appendEthHeader(b, ethDst, senderMAC, etherTypeARP)
	return append(b, body...)
}
