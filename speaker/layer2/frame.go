package layer2

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
)

// Ethernet framing is done by hand rather than with mdlayher/ethernet: the
// read path only needs three fields of a fixed 14-byte header, and parsing it
// in place avoids copying every frame the LAN broadcasts.
const (
	ethHeaderLen   = 14
	etherTypeARP   = 0x0806
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	ipv6HeaderLen  = 40
	protoICMPv6    = 58
	ndpHopLimit    = 255
	icmpTypeNS     = 135
	icmpTypeNA     = 136
	macLen         = 6
	maxFrameLength = 2048
)

var (
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	zeroMAC      = net.HardwareAddr{0, 0, 0, 0, 0, 0}
	// allNodesMAC is the Ethernet multicast address of ff02::1 (RFC 2464:
	// 33:33 followed by the low 32 bits of the group).
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
	allNodes    = netip.MustParseAddr("ff02::1")
)

// verdict is what the responder does with one inbound frame. It drives both
// the reply and the counters, so the tests can check one value per case.
type verdict int

const (
	// verdictMalformed: the frame claims to be ARP or NDP but is not valid.
	verdictMalformed verdict = iota
	// verdictIgnored: a valid frame that asks nothing of us (a reply, another
	// ICMPv6 type, our own transmission, another VLAN).
	verdictIgnored
	// verdictRequest: a valid request or solicitation that we do not answer,
	// usually because the target is not owned here.
	verdictRequest
	// verdictAnswer: a request for an owned address; the reply is returned.
	verdictAnswer
	// verdictConflict: another host announces an owned address as its own
	// (gratuitous ARP, an ARP reply or request sent from the address, a
	// Neighbor Advertisement for it); the claim is returned.
	verdictConflict
)

// claim is another host's assertion that an owned address lives at its
// MAC. The MAC is an array, not a slice into the frame, because the read
// buffer is reused for the next frame while the claim is still handled.
type claim struct {
	ip  netip.Addr
	mac [macLen]byte
}

func (v verdict) String() string {
	switch v {
	case verdictMalformed:
		return "malformed"
	case verdictIgnored:
		return "ignored"
	case verdictRequest:
		return "request"
	case verdictAnswer:
		return "answer"
	case verdictConflict:
		return "conflict"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// addrSet is an immutable set of owned addresses for one interface. It is
// published through an atomic pointer and never modified after that, so the
// per-packet lookup needs no lock.
type addrSet map[netip.Addr]struct{}

func (s addrSet) has(a netip.Addr) bool {
	_, ok := s[a]
	return ok
}

// ethHeader splits an Ethernet frame without copying it. ok is false when the
// frame is too short to have a header.
func ethHeader(frame []byte) (dst, src net.HardwareAddr, etherType uint16, payload []byte, ok bool) {
	if len(frame) < ethHeaderLen {
		return nil, nil, 0, nil, false
	}
	return frame[0:6], frame[6:12], binary.BigEndian.Uint16(frame[12:14]), frame[ethHeaderLen:], true
}

// appendEthHeader starts a frame in b.
func appendEthHeader(b []byte, dst, src net.HardwareAddr, etherType uint16) []byte {
	b = append(b, dst[:macLen]...)
	b = append(b, src[:macLen]...)
	return binary.BigEndian.AppendUint16(b, etherType)
}

// isUnicastMAC reports whether mac can be the destination of a reply: a
// request whose sender claims a group or all-zero address is bogus, and
// replying to it would turn us into a broadcast amplifier.
func isUnicastMAC(mac net.HardwareAddr) bool {
	if len(mac) != macLen || mac[0]&1 != 0 {
		return false
	}
	for _, b := range mac {
		if b != 0 {
			return true
		}
	}
	return false
}

func sameMAC(a, b net.HardwareAddr) bool {
	return len(a) == macLen && len(b) == macLen && string(a) == string(b)
}
