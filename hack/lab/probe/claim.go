package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
)

const (
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
)

// runGARP sends frames claiming an address, for the duplicate-announcer
// tests: the speaker owning it must report the claim and win the LAN back.
func runGARP(args []string) error {
	fs := flag.NewFlagSet("garp", flag.ExitOnError)
	ipS := fs.String("ip", "", "address to claim (required)")
	iface := fs.String("iface", "eth0", "interface")
	macS := fs.String("mac", "", "MAC to claim it for (default: the interface's)")
	count := fs.Int("count", 1, "frames to send")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between frames")
	fs.Parse(args)
	ip, err := netip.ParseAddr(*ipS)
	if err != nil {
		return fmt.Errorf("--ip %q: %w", *ipS, err)
	}
	ip = ip.Unmap()
	ifi, err := net.InterfaceByName(*iface)
	if err != nil {
		return err
	}
	mac := ifi.HardwareAddr
	if *macS != "" {
		if mac, err = net.ParseMAC(*macS); err != nil || len(mac) != 6 {
			return fmt.Errorf("--mac %q: not an Ethernet MAC", *macS)
		}
	}
	frame, et, err := claimFrame(mac, ip)
	if err != nil {
		return err
	}
	c, err := packet.Listen(ifi, packet.Raw, et, nil)
	if err != nil {
		return fmt.Errorf("raw socket on %s: %w", ifi.Name, err)
	}
	defer c.Close()
	o := newOut()
	for i := range *count {
		if i > 0 {
			time.Sleep(*interval)
		}
		at := time.Now()
		if _, err := c.WriteTo(frame, &packet.Addr{HardwareAddr: net.HardwareAddr(frame[:6])}); err != nil {
			return fmt.Errorf("sending claim %d: %w", i, err)
		}
		o.line(struct {
			N    int     `json:"n"`
			Unix float64 `json:"unix_ms"`
		}{i, unixMS(at)})
	}
	return nil
}

// claimFrame builds the Ethernet frame announcing ip at mac and returns
// its EtherType.
func claimFrame(mac net.HardwareAddr, ip netip.Addr) ([]byte, int, error) {
	eth := func(dst net.HardwareAddr, et uint16) []byte {
		b := append(append([]byte{}, dst...), mac...)
		return binary.BigEndian.AppendUint16(b, et)
	}
	if ip.Is4() {
		p, err := arp.NewPacket(arp.OperationRequest, mac, ip, net.HardwareAddr{0, 0, 0, 0, 0, 0}, ip)
		if err != nil {
			return nil, 0, err
		}
		body, err := p.MarshalBinary()
		if err != nil {
			return nil, 0, err
		}
		return append(eth(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, etherTypeARP), body...), etherTypeARP, nil
	}
	allNodes := netip.MustParseAddr("ff02::1")
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
	body, err := ndp.MarshalMessageChecksum(na, ip, allNodes)
	if err != nil {
		return nil, 0, err
	}
	b := eth(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, etherTypeIPv6)
	b = append(b, 6<<4, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	b = append(b, 58, 255) // ICMPv6, hop limit 255 as NDP requires
	s, d := ip.As16(), allNodes.As16()
	b = append(append(b, s[:]...), d[:]...)
	return append(b, body...), etherTypeIPv6, nil
}

type neighLine struct {
	Unix  float64 `json:"unix_ms"`
	MAC   string  `json:"mac"`
	State string  `json:"state,omitempty"`
}

// runNeigh reports the neighbour entry for an address and every change to
// it, as the kernel's notifications (ip monitor) tell them.
func runNeigh(args []string) error {
	fs := flag.NewFlagSet("neigh", flag.ExitOnError)
	ipS := fs.String("ip", "", "address to watch (required)")
	iface := fs.String("iface", "eth0", "interface")
	duration := fs.Duration("duration", 10*time.Second, "how long to watch (0: until signalled or --until-file)")
	untilFile := fs.String("until-file", "", "stop once this file exists")
	fs.Parse(args)
	ip, err := netip.ParseAddr(*ipS)
	if err != nil {
		return fmt.Errorf("--ip %q: %w", *ipS, err)
	}
	ctx, cancel := stopContext(*duration, *untilFile)
	defer cancel()
	o := newOut()

	mon := exec.CommandContext(ctx, "ip", "monitor", "neigh")
	stdout, err := mon.StdoutPipe()
	if err != nil {
		return err
	}
	if err := mon.Start(); err != nil {
		return err
	}
	// The starting state, read once the monitor listens, so no change
	// falls between the two.
	out, err := exec.Command("ip", "neigh", "show", ip.String(), "dev", *iface).Output()
	if err != nil {
		return err
	}
	mac, state := parseNeigh(string(out))
	o.line(neighLine{unixMS(time.Now()), mac, state})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 || (f[0] != ip.String() && !(f[0] == "Deleted" && len(f) > 1 && f[1] == ip.String())) {
			continue
		}
		mac, state := parseNeigh(line)
		if f[0] == "Deleted" {
			mac, state = "", "DELETED"
		}
		o.line(neighLine{unixMS(time.Now()), mac, state})
	}
	// Killed by the context is how a watch ends.
	if err := mon.Wait(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("ip monitor: %w", err)
	}
	return nil
}

// parseNeigh reads the link-layer address and state from one line of
// `ip neigh`: "198.51.100.100 dev eth0 lladdr 02:00:c6:33:64:0b REACHABLE".
func parseNeigh(line string) (mac, state string) {
	f := strings.Fields(strings.TrimSpace(line))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			mac = f[i+1]
		}
	}
	if len(f) > 0 {
		state = f[len(f)-1]
	}
	return mac, state
}
