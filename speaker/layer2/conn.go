package layer2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
)

// GroupJoiner joins and leaves IPv6 multicast groups on one interface.
// *ndp.Conn implements it.
type GroupJoiner interface {
	JoinGroup(group netip.Addr) error
	LeaveGroup(group netip.Addr) error
	Close() error
}

// Conns are the connections one interface's responder uses. Each field may
// be nil to switch that part off (a test of ARP alone, or an interface
// without IPv6).
//
// ARP and NDP carry whole Ethernet frames: ReadFrom returns one frame, and
// WriteTo sends one; the address passed to WriteTo is a *packet.Addr with
// the frame's destination MAC, which in-memory test connections may ignore.
// The responder owns the Conns once handed over and closes them.
type Conns struct {
	// ARP receives frames of EtherType 0x0806.
	ARP net.PacketConn
	// NDP receives IPv6 frames carrying Neighbor Solicitations and
	// Advertisements (other frames are tolerated and counted as ignored).
	NDP net.PacketConn
	// Groups joins the solicited-node multicast group of each owned IPv6
	// address, so that multicast solicitations reach NDP even where the NIC
	// or an MLD-snooping switch filters multicast. Used only with NDP.
	Groups GroupJoiner
}

// Close closes every non-nil connection and returns their errors joined.
func (c Conns) Close() error {
	var errs []error
	for _, cl := range []interface{ Close() error }{c.ARP, c.NDP, c.Groups} {
		if cl == nil { // a nil field converts to a nil interface here
			continue
		}
		if err := cl.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ndpProgram is a classic BPF program that keeps only IPv6 frames whose
// next header is ICMPv6 and whose ICMPv6 type is Neighbor Solicitation or
// Neighbor Advertisement: solicitations to answer, advertisements to spot
// another host claiming an owned address. Without it the NDP packet socket
// would copy every IPv6 frame the node receives. Advertisements are rare
// next to solicitations (a LAN sends one per resolution, as it does a
// solicitation), so letting them through costs little.
var ndpProgram = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 12, Size: 2}, // EtherType
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherTypeIPv6, SkipTrue: 6},
	bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 1}, // IPv6 next header
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protoICMPv6, SkipTrue: 4},
	bpf.LoadAbsolute{Off: ethHeaderLen + ipv6HeaderLen, Size: 1}, // ICMPv6 type
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: icmpTypeNS, SkipTrue: 1},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: icmpTypeNA, SkipTrue: 1},
	bpf.RetConstant{Val: maxFrameLength},
	bpf.RetConstant{Val: 0},
}

var ndpFilter = mustAssemble(ndpProgram)

func mustAssemble(prog []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err) // a static program; only a bug in this file gets here
	}
	return raw
}

// Dial opens the real connections for ifi: an AF_PACKET socket for ARP, one
// for IPv6 filtered to Neighbor Solicitations and Advertisements, and an ICMPv6 socket used only
// to join multicast groups (joining through the IP stack, not the packet
// socket, is what makes the kernel send MLD reports to snooping switches).
// It needs CAP_NET_RAW and opens the sockets in the calling thread's network
// namespace.
func Dial(ifi *net.Interface) (Conns, error) {
	var c Conns
	fail := func(what string, err error) (Conns, error) {
		_ = c.Close()
		return Conns{}, fmt.Errorf("layer2: %s on %s: %w", what, ifi.Name, err)
	}

	arpConn, err := packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
	if err != nil {
		return fail("opening ARP socket", err)
	}
	if c.ARP, err = rawCalls(arpConn, ifi.Index, etherTypeARP); err != nil {
		_ = arpConn.Close()
		return fail("opening ARP socket", err)
	}

	ndpConn, err := packet.Listen(ifi, packet.Raw, etherTypeIPv6, &packet.Config{Filter: ndpFilter})
	if err != nil {
		return fail("opening NDP socket", err)
	}
	if c.NDP, err = rawCalls(ndpConn, ifi.Index, etherTypeIPv6); err != nil {
		_ = ndpConn.Close()
		return fail("opening NDP socket", err)
	}

	// Bound to "::" so that no address needs to be configured (or out of
	// DAD) on the interface yet.
	groups, _, err := ndp.Listen(ifi, ndp.Unspecified)
	if err != nil {
		return fail("opening ICMPv6 socket", err)
	}
	c.Groups = groups
	// Nothing is ever read from this socket, so block every ICMPv6 type:
	// otherwise its receive queue would fill with traffic nobody drains.
	var block ipv6.ICMPFilter
	block.SetAll(true)
	if err := groups.SetICMPFilter(&block); err != nil {
		return fail("filtering ICMPv6 socket", err)
	}
	return c, nil
}
