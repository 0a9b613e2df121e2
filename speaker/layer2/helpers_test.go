package layer2

import (
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

// Test addresses: the documentation ranges the lab uses, never assigned to
// any real interface.
var (
	ourMAC   = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x11}
	peerMAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	peerIP   = netip.MustParseAddr("198.51.100.2")
	vip4     = netip.MustParseAddr("198.51.100.100")
	other4   = netip.MustParseAddr("198.51.100.101")
	peerIP6  = netip.MustParseAddr("2001:db8:100::2")
	peerLL6  = netip.MustParseAddr("fe80::2")
	vip6     = netip.MustParseAddr("2001:db8:100::100")
	other6   = netip.MustParseAddr("2001:db8:100::101")
	ownedSet = addrSet{vip4: {}, vip6: {}}
)

// arpRequest builds the request a neighbour sends to resolve target.
func arpRequest(srcMAC net.HardwareAddr, srcIP, target netip.Addr) []byte {
	return marshalARP(nil, arp.OperationRequest, broadcastMAC, srcMAC, srcIP, zeroMAC, target)
}

// nsFrame describes a Neighbor Solicitation frame for the tests; the zero
// values of its knobs give a valid multicast NS.
type nsFrame struct {
	ethSrc, ethDst net.HardwareAddr
	src, dst       netip.Addr // dst invalid: the target's solicited-node group
	target         netip.Addr
	noSourceLLA    bool
	hopLimit       byte // 0: 255
	badChecksum    bool
	icmpCode       byte
	padTo          int // pad the frame with zeros to this length, as Ethernet does
}

func (f nsFrame) bytes() []byte {
	if f.ethSrc == nil {
		f.ethSrc = peerMAC
	}
	if !f.dst.IsValid() {
		f.dst, _ = ndp.SolicitedNodeMulticast(f.target)
	}
	if f.ethDst == nil {
		d := f.dst.As16()
		f.ethDst = net.HardwareAddr{0x33, 0x33, d[12], d[13], d[14], d[15]}
	}
	if f.hopLimit == 0 {
		f.hopLimit = ndpHopLimit
	}
	ns := &ndp.NeighborSolicitation{TargetAddress: f.target}
	if !f.noSourceLLA {
		ns.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: f.ethSrc}}
	}
	body, err := ndp.MarshalMessageChecksum(ns, f.src, f.dst)
	if err != nil {
		panic(err)
	}
	body[1] = f.icmpCode
	if f.icmpCode != 0 {
		// Keep the checksum valid so the code check is what rejects it.
		c := binary.BigEndian.Uint16(body[2:4])
		binary.BigEndian.PutUint16(body[2:4], onesSub(c, uint16(f.icmpCode)))
	}
	if f.badChecksum {
		body[2] ^= 0xff
	}
	return ipv6Frame(f.ethSrc, f.ethDst, f.src, f.dst, protoICMPv6, f.hopLimit, body, f.padTo)
}

// withTarget rewrites the NS target of a frame built by nsFrame (for
// targets ndp refuses to marshal) and fixes up the checksum.
func withTarget(frame []byte, target netip.Addr) []byte {
	b := append([]byte(nil), frame...)
	t := target.As16()
	msg := b[ethHeaderLen+ipv6HeaderLen:]
	copy(msg[8:24], t[:])
	msg[2], msg[3] = 0, 0
	src := netip.AddrFrom16([16]byte(b[ethHeaderLen+8 : ethHeaderLen+24]))
	dst := netip.AddrFrom16([16]byte(b[ethHeaderLen+24 : ethHeaderLen+40]))
	binary.BigEndian.PutUint16(msg[2:4], ^icmpv6Sum(src, dst, msg))
	return b
}

// onesSub adjusts a ones' complement checksum for a word that grew by d.
func onesSub(c, d uint16) uint16 {
	s := uint32(^c) + uint32(d)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func ipv6Frame(ethSrc, ethDst net.HardwareAddr, src, dst netip.Addr, next, hop byte, body []byte, padTo int) []byte {
	b := appendEthHeader(nil, ethDst, ethSrc, etherTypeIPv6)
	b = append(b, 6<<4, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	b = append(b, next, hop)
	s, d := src.As16(), dst.As16()
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = append(b, body...)
	for len(b) < padTo {
		b = append(b, 0)
	}
	return b
}

// arpSummary is the readable form of an ARP frame, for cmp.Diff.
type arpSummary struct {
	EthDst, EthSrc      string
	Op                  arp.Operation
	SenderMAC, SenderIP string
	TargetMAC, TargetIP string
}

func summarizeARP(frame []byte) *arpSummary {
	if frame == nil {
		return nil
	}
	dst, src, et, payload, ok := ethHeader(frame)
	if !ok || et != etherTypeARP {
		return &arpSummary{EthDst: "not an ARP frame"}
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(payload); err != nil {
		return &arpSummary{EthDst: "bad ARP: " + err.Error()}
	}
	return &arpSummary{
		EthDst: dst.String(), EthSrc: src.String(), Op: p.Operation,
		SenderMAC: p.SenderHardwareAddr.String(), SenderIP: p.SenderIP.String(),
		TargetMAC: p.TargetHardwareAddr.String(), TargetIP: p.TargetIP.String(),
	}
}

// naSummary is the readable form of a Neighbor Advertisement frame.
type naSummary struct {
	EthDst, EthSrc              string
	Src, Dst                    string
	HopLimit                    byte
	ChecksumOK                  bool
	Router, Solicited, Override bool
	Target                      string
	TargetLLA                   string
}

func summarizeNA(frame []byte) *naSummary {
	if frame == nil {
		return nil
	}
	dst, src, et, pkt, ok := ethHeader(frame)
	if !ok || et != etherTypeIPv6 || len(pkt) < ipv6HeaderLen {
		return &naSummary{EthDst: "not an IPv6 frame"}
	}
	ipSrc := netip.AddrFrom16([16]byte(pkt[8:24]))
	ipDst := netip.AddrFrom16([16]byte(pkt[24:40]))
	msg := pkt[ipv6HeaderLen:]
	s := &naSummary{
		EthDst: dst.String(), EthSrc: src.String(),
		Src: ipSrc.String(), Dst: ipDst.String(), HopLimit: pkt[7],
		ChecksumOK: validICMPv6Checksum(ipSrc, ipDst, msg),
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		s.Target = "bad NDP: " + err.Error()
		return s
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		s.Target = "not an NA"
		return s
	}
	s.Router, s.Solicited, s.Override = na.Router, na.Solicited, na.Override
	s.Target = na.TargetAddress.String()
	for _, o := range na.Options {
		if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Target {
			s.TargetLLA = l.Addr.String()
		}
	}
	return s
}

// summarizeClaim is the readable form of a claim: "" when there is none.
func summarizeClaim(c claim) string {
	if c == (claim{}) {
		return ""
	}
	return c.ip.String() + " " + net.HardwareAddr(c.mac[:]).String()
}
