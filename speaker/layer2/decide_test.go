package layer2

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/bpf"
)

func TestDecideARP(t *testing.T) {
	valid := arpRequest(peerMAC, peerIP, vip4)
	withOp := func(op arp.Operation) []byte {
		b := append([]byte(nil), valid...)
		binary.BigEndian.PutUint16(b[ethHeaderLen+6:], uint16(op))
		return b
	}
	withByte := func(off int, v byte) []byte {
		b := append([]byte(nil), valid...)
		b[off] = v
		return b
	}
	answer := &arpSummary{
		EthDst: peerMAC.String(), EthSrc: ourMAC.String(), Op: arp.OperationReply,
		SenderMAC: ourMAC.String(), SenderIP: vip4.String(),
		TargetMAC: peerMAC.String(), TargetIP: peerIP.String(),
	}

	peerClaim := vip4.String() + " " + peerMAC.String()
	// fromOwned is a request a host with the VIP configured sends while
	// resolving its gateway: it claims the VIP just the same.
	fromOwned := arpRequest(peerMAC, vip4, peerIP)
	replyToOther := marshalARP(nil, arp.OperationReply, peerMAC, peerMAC, vip4, ourMAC, peerIP)
	relayedOurs := marshalARP(nil, arp.OperationReply, broadcastMAC, ourMAC, vip4, broadcastMAC, vip4)
	copy(relayedOurs[6:12], peerMAC) // Ethernet source rewritten, ARP sender still ours

	tests := []struct {
		name  string
		frame []byte
		want  verdict
		reply *arpSummary
		claim string
	}{
		{name: "request for owned address", frame: valid, want: verdictAnswer, reply: answer},
		{name: "padded to Ethernet minimum", frame: append(append([]byte(nil), valid...), make([]byte, 18)...), want: verdictAnswer, reply: answer},
		{name: "request for unowned address", frame: arpRequest(peerMAC, peerIP, other4), want: verdictRequest},
		{
			name:  "probe from an address-less host is answered",
			frame: arpRequest(peerMAC, netip.IPv4Unspecified(), vip4),
			want:  verdictAnswer,
			reply: &arpSummary{
				EthDst: peerMAC.String(), EthSrc: ourMAC.String(), Op: arp.OperationReply,
				SenderMAC: ourMAC.String(), SenderIP: vip4.String(),
				TargetMAC: peerMAC.String(), TargetIP: "0.0.0.0",
			},
		},
		{name: "gratuitous request from another host", frame: arpRequest(peerMAC, vip4, vip4), want: verdictConflict, claim: peerClaim},
		{name: "gratuitous reply from another host", frame: gratuitousARP(peerMAC, vip4)[1], want: verdictConflict, claim: peerClaim},
		{name: "reply from another host", frame: replyToOther, want: verdictConflict, claim: peerClaim},
		{name: "request sent from an owned address", frame: fromOwned, want: verdictConflict, claim: peerClaim},
		{name: "owned sender relayed with another Ethernet source", frame: relayedOurs, want: verdictIgnored},
		{name: "owned sender with a multicast MAC", frame: arpRequest(broadcastMAC, vip4, vip4), want: verdictIgnored},
		{name: "owned sender with the zero MAC", frame: arpRequest(zeroMAC, vip4, vip4), want: verdictIgnored},
		{name: "gratuitous ARP for an unowned address", frame: arpRequest(peerMAC, other4, other4), want: verdictRequest},
		{name: "gratuitous reply for an unowned address", frame: gratuitousARP(peerMAC, other4)[1], want: verdictIgnored},
		{name: "requester claims a multicast MAC", frame: arpRequest(broadcastMAC, peerIP, vip4), want: verdictRequest},
		{name: "requester claims the zero MAC", frame: arpRequest(zeroMAC, peerIP, vip4), want: verdictRequest},
		{name: "reply is not answered", frame: withOp(arp.OperationReply), want: verdictIgnored},
		{name: "unknown operation", frame: withOp(9), want: verdictIgnored},
		{name: "our own transmission", frame: arpRequest(ourMAC, peerIP, vip4), want: verdictIgnored},
		{name: "other EtherType", frame: withByte(13, 0x00), want: verdictIgnored},
		{name: "empty", frame: nil, want: verdictMalformed},
		{name: "shorter than an Ethernet header", frame: valid[:13], want: verdictMalformed},
		{name: "truncated ARP body", frame: valid[:ethHeaderLen+20], want: verdictMalformed},
		{name: "hardware type not Ethernet", frame: withByte(ethHeaderLen+1, 6), want: verdictMalformed},
		{name: "protocol not IPv4", frame: withByte(ethHeaderLen+2, 0x86), want: verdictMalformed},
		{name: "hardware length not 6", frame: withByte(ethHeaderLen+4, 8), want: verdictMalformed},
		{name: "protocol length 16", frame: withByte(ethHeaderLen+5, 16), want: verdictMalformed},
		{name: "protocol length 3", frame: withByte(ethHeaderLen+5, 3), want: verdictMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reply, cl := decideARP(tt.frame, ourMAC, ownedSet)
			if got != tt.want {
				t.Errorf("verdict = %v, want %v", got, tt.want)
			}
			if diff := cmp.Diff(tt.reply, summarizeARP(reply)); diff != "" {
				t.Errorf("reply mismatch (-want +got):\n%s", diff)
			}
			if got := summarizeClaim(cl); got != tt.claim {
				t.Errorf("claim = %q, want %q", got, tt.claim)
			}
		})
	}
}

func TestGratuitousARP(t *testing.T) {
	var got []*arpSummary
	for _, f := range gratuitousARP(ourMAC, vip4) {
		got = append(got, summarizeARP(f))
	}
	want := []*arpSummary{
		{
			EthDst: "ff:ff:ff:ff:ff:ff", EthSrc: ourMAC.String(), Op: arp.OperationRequest,
			SenderMAC: ourMAC.String(), SenderIP: vip4.String(),
			TargetMAC: "00:00:00:00:00:00", TargetIP: vip4.String(),
		},
		{
			EthDst: "ff:ff:ff:ff:ff:ff", EthSrc: ourMAC.String(), Op: arp.OperationReply,
			SenderMAC: ourMAC.String(), SenderIP: vip4.String(),
			TargetMAC: "ff:ff:ff:ff:ff:ff", TargetIP: vip4.String(),
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("gratuitous ARP mismatch (-want +got):\n%s", diff)
	}
	// A gratuitous request must not be answered by another responder that
	// owns the same address: it asks nothing, and claims the address.
	if v, reply, _ := decideARP(gratuitousARP(peerMAC, vip4)[0], ourMAC, ownedSet); v != verdictConflict || reply != nil {
		t.Errorf("gratuitous request from a peer: verdict %v with reply %v, want %v and none", v, reply != nil, verdictConflict)
	}
}

func TestDecideNDP(t *testing.T) {
	solicited := &naSummary{
		EthDst: peerMAC.String(), EthSrc: ourMAC.String(),
		Src: vip6.String(), Dst: peerIP6.String(), HopLimit: 255, ChecksumOK: true,
		Solicited: true, Override: true, Target: vip6.String(), TargetLLA: ourMAC.String(),
	}
	solicitedLL := *solicited
	solicitedLL.Dst = peerLL6.String()

	peerClaim := vip6.String() + " " + peerMAC.String()
	na := func(n ndp.NeighborAdvertisement, ethSrc net.HardwareAddr, dst netip.Addr, hop byte) []byte {
		f := marshalNA(&n, ethSrc, allNodesMAC, dst)
		f[ethHeaderLen+7] = hop
		return f
	}
	tlla := func(mac net.HardwareAddr) []ndp.Option {
		return []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}}
	}
	badSum := unsolicitedNA(peerMAC, vip6)
	badSum[ethHeaderLen+ipv6HeaderLen+2] ^= 0xff

	tests := []struct {
		name  string
		frame []byte
		want  verdict
		reply *naSummary
		claim string
	}{
		{name: "multicast NS for owned address", frame: nsFrame{src: peerIP6, target: vip6}.bytes(), want: verdictAnswer, reply: solicited},
		{name: "multicast NS from link-local", frame: nsFrame{src: peerLL6, target: vip6}.bytes(), want: verdictAnswer, reply: &solicitedLL},
		{name: "unicast NS (reachability probe)", frame: nsFrame{src: peerIP6, dst: vip6, ethDst: ourMAC, target: vip6}.bytes(), want: verdictAnswer, reply: solicited},
		{name: "NS without source LLA", frame: nsFrame{src: peerIP6, target: vip6, noSourceLLA: true}.bytes(), want: verdictAnswer, reply: solicited},
		{name: "padded frame", frame: nsFrame{src: peerIP6, target: vip6, padTo: 128}.bytes(), want: verdictAnswer, reply: solicited},
		{
			name:  "DAD probe for owned address is defended on all-nodes",
			frame: nsFrame{src: netip.IPv6Unspecified(), target: vip6, noSourceLLA: true}.bytes(),
			want:  verdictAnswer,
			reply: &naSummary{
				EthDst: "33:33:00:00:00:01", EthSrc: ourMAC.String(),
				Src: vip6.String(), Dst: "ff02::1", HopLimit: 255, ChecksumOK: true,
				Override: true, Target: vip6.String(), TargetLLA: ourMAC.String(),
			},
		},
		{name: "NS for unowned address", frame: nsFrame{src: peerIP6, target: other6}.bytes(), want: verdictRequest},
		{name: "NS for owned IPv4 as mapped IPv6", frame: withTarget(nsFrame{src: peerIP6, target: vip6}.bytes(), netip.AddrFrom16(vip4.As16())), want: verdictMalformed},
		{name: "NS to an unrelated destination", frame: nsFrame{src: peerIP6, dst: other6, ethDst: ourMAC, target: vip6}.bytes(), want: verdictIgnored},
		{name: "NS to another solicited-node group", frame: nsFrame{src: peerIP6, dst: netip.MustParseAddr("ff02::1:ff00:999"), target: vip6}.bytes(), want: verdictIgnored},
		{name: "requester with multicast MAC", frame: nsFrame{ethSrc: allNodesMAC, src: peerIP6, target: vip6}.bytes(), want: verdictRequest},
		{name: "our own transmission", frame: nsFrame{ethSrc: ourMAC, src: peerIP6, target: vip6}.bytes(), want: verdictIgnored},
		{name: "DAD probe with source LLA", frame: nsFrame{src: netip.IPv6Unspecified(), target: vip6}.bytes(), want: verdictMalformed},
		{name: "DAD probe sent unicast", frame: nsFrame{src: netip.IPv6Unspecified(), dst: vip6, target: vip6, noSourceLLA: true}.bytes(), want: verdictMalformed},
		{name: "hop limit not 255 (routed from off-link)", frame: nsFrame{src: peerIP6, target: vip6, hopLimit: 64}.bytes(), want: verdictMalformed},
		{name: "bad checksum", frame: nsFrame{src: peerIP6, target: vip6, badChecksum: true}.bytes(), want: verdictMalformed},
		{name: "nonzero ICMP code", frame: nsFrame{src: peerIP6, target: vip6, icmpCode: 1}.bytes(), want: verdictMalformed},
		{name: "multicast target", frame: withTarget(nsFrame{src: peerIP6, target: vip6}.bytes(), netip.MustParseAddr("ff02::1:ff00:100")), want: verdictMalformed},
		{name: "multicast source", frame: nsFrame{src: netip.MustParseAddr("ff02::2"), target: vip6}.bytes(), want: verdictMalformed},
		{name: "unsolicited NA for an owned address", frame: unsolicitedNA(peerMAC, vip6), want: verdictConflict, claim: peerClaim},
		{name: "solicited NA for an owned address", frame: na(ndp.NeighborAdvertisement{Solicited: true, TargetAddress: vip6, Options: tlla(peerMAC)}, peerMAC, peerIP6, 255), want: verdictConflict, claim: peerClaim},
		{name: "NA for an unowned address", frame: unsolicitedNA(peerMAC, other6), want: verdictIgnored},
		{name: "NA binding our MAC from another source", frame: na(ndp.NeighborAdvertisement{Override: true, TargetAddress: vip6, Options: tlla(ourMAC)}, peerMAC, allNodes, 255), want: verdictIgnored},
		{name: "NA without a target LLA", frame: na(ndp.NeighborAdvertisement{Override: true, TargetAddress: vip6}, peerMAC, allNodes, 255), want: verdictIgnored},
		{name: "NA binding a multicast MAC", frame: na(ndp.NeighborAdvertisement{Override: true, TargetAddress: vip6, Options: tlla(allNodesMAC)}, peerMAC, allNodes, 255), want: verdictIgnored},
		{name: "NA routed from off-link", frame: na(ndp.NeighborAdvertisement{Override: true, TargetAddress: vip6, Options: tlla(peerMAC)}, peerMAC, allNodes, 64), want: verdictMalformed},
		{name: "NA with a bad checksum", frame: badSum, want: verdictMalformed},
		{name: "NA with a multicast target", frame: withTarget(unsolicitedNA(peerMAC, vip6), netip.MustParseAddr("ff02::1")), want: verdictMalformed},
		{name: "NS sent from an owned address", frame: nsFrame{src: vip6, target: other6}.bytes(), want: verdictConflict, claim: peerClaim},
		{name: "NS sent from an owned address without source LLA", frame: nsFrame{src: vip6, target: other6, noSourceLLA: true}.bytes(), want: verdictRequest},
		{name: "UDP", frame: ipv6Frame(peerMAC, ourMAC, peerIP6, vip6, 17, 64, make([]byte, 16), 0), want: verdictIgnored},
		{name: "IPv4 EtherType", frame: arpRequest(peerMAC, peerIP, vip4), want: verdictIgnored},
		{name: "empty", frame: nil, want: verdictMalformed},
		{name: "truncated IPv6 header", frame: nsFrame{src: peerIP6, target: vip6}.bytes()[:ethHeaderLen+30], want: verdictMalformed},
		{name: "payload length beyond frame", frame: nsFrame{src: peerIP6, target: vip6}.bytes()[:ethHeaderLen+ipv6HeaderLen+20], want: verdictMalformed},
		{name: "not version 6", frame: func() []byte { b := nsFrame{src: peerIP6, target: vip6}.bytes(); b[ethHeaderLen] = 4 << 4; return b }(), want: verdictMalformed},
		{name: "ICMPv6 shorter than a header", frame: ipv6Frame(peerMAC, ourMAC, peerIP6, vip6, protoICMPv6, 255, []byte{135, 0}, 0), want: verdictMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reply, cl := decideNDP(tt.frame, ourMAC, ownedSet)
			if got != tt.want {
				t.Errorf("verdict = %v, want %v", got, tt.want)
			}
			if diff := cmp.Diff(tt.reply, summarizeNA(reply)); diff != "" {
				t.Errorf("reply mismatch (-want +got):\n%s", diff)
			}
			if got := summarizeClaim(cl); got != tt.claim {
				t.Errorf("claim = %q, want %q", got, tt.claim)
			}
		})
	}
}

func TestUnsolicitedNA(t *testing.T) {
	want := &naSummary{
		EthDst: "33:33:00:00:00:01", EthSrc: ourMAC.String(),
		Src: vip6.String(), Dst: "ff02::1", HopLimit: 255, ChecksumOK: true,
		Override: true, Target: vip6.String(), TargetLLA: ourMAC.String(),
	}
	if diff := cmp.Diff(want, summarizeNA(unsolicitedNA(ourMAC, vip6))); diff != "" {
		t.Errorf("unsolicited NA mismatch (-want +got):\n%s", diff)
	}
}

func TestNDPFilter(t *testing.T) {
	// The BPF program is checked against the same frames as decideNDP, run
	// by x/net/bpf's interpreter, so a wrong offset shows up without root.
	vm, err := bpf.NewVM(ndpProgram)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"multicast NS", nsFrame{src: peerIP6, target: vip6}.bytes(), true},
		{"unicast NS", nsFrame{src: peerIP6, dst: vip6, ethDst: ourMAC, target: vip6}.bytes(), true},
		{"NA", unsolicitedNA(peerMAC, vip6), true},
		{"ICMPv6 echo request", ipv6Frame(peerMAC, ourMAC, peerIP6, vip6, protoICMPv6, 64, []byte{128, 0, 0, 0, 0, 0, 0, 0}, 0), false},
		{"router advertisement", ipv6Frame(peerMAC, ourMAC, peerIP6, vip6, protoICMPv6, 255, []byte{134, 0, 0, 0, 0, 0, 0, 0}, 0), false},
		{"UDP", ipv6Frame(peerMAC, ourMAC, peerIP6, vip6, 17, 64, make([]byte, 16), 0), false},
		{"ARP", arpRequest(peerMAC, peerIP, vip4), false},
		{"short", []byte{1, 2, 3}, false},
	}
	for _, tt := range tests {
		n, err := vm.Run(tt.frame)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := n > 0; got != tt.want {
			t.Errorf("%s: accepted = %v, want %v", tt.name, got, tt.want)
		}
	}
}
