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
// what to do and, for verdictAnswer, the reply frame to send.
//
// It is pure so that the table tests and the fuzz target exercise exactly
// the code the responder runs.
func decideARP(frame []byte, mac net.HardwareAddr, owned addrSet) (verdict, []byte) {
	_, src, et, payload, ok := ethHeader(frame)
	if !ok {
		return verdictMalformed, nil
	}
	if et != etherTypeARP {
		// A VLAN-tagged frame or anything else the socket should not have
		// delivered: not ours to interpret.
		return verdictIgnored, nil
	}
	if sameMAC(src, mac) {
		// Packet sockets also see frames this host transmits, including
		// the kernel's own ARP requests; never answer ourselves.
		return verdictIgnored, nil
	}

	// The fixed part of an IPv4-over-Ethernet ARP packet is checked in place
	// so that requests for other hosts' addresses, nearly all of what a LAN
	// broadcasts, are dropped without allocating.
	if len(payload) < 8 {
		return verdictMalformed, nil
	}
	if binary.BigEndian.Uint16(payload[0:2]) != arpHardwareEthernet ||
		binary.BigEndian.Uint16(payload[2:4]) != etherTypeIPv4 ||
		payload[4] != macLen || payload[5] != 4 {
		return verdictMalformed, nil
	}
	if len(payload) < arpPacketLen {
		return verdictMalformed, nil
	}
	if arp.Operation(binary.BigEndian.Uint16(payload[6:8])) != arp.OperationRequest {
		return verdictIgnored, nil
	}
	if !owned.has(netip.AddrFrom4([4]byte(payload[24:28]))) {
		return verdictRequest, nil
	}

	var p arp.Packet
	if err := p.UnmarshalBinary(payload); err != nil {
		return verdictMalformed, nil
	}
	if p.SenderIP == p.TargetIP {
		// A gratuitous request announces the sender's own binding; it asks
		// no question, so answering would only add noise (and the kernel
		// does not answer it either).
		return verdictRequest, nil
	}
	if !isUnicastMAC(p.SenderHardwareAddr) {
		return verdictRequest, nil
	}

	// RFC 826: swap sender and target, fill in our hardware address and
	// send the reply to the requester's hardware address. A probe (sender
	// IP 0.0.0.0, RFC 5227) is answered the same way, which is how an
	// address in use is defended.
	return verdictAnswer, marshalARP(nil, arp.OperationReply, p.SenderHardwareAddr,
		mac, p.TargetIP, p.SenderHardwareAddr, p.SenderIP)
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
