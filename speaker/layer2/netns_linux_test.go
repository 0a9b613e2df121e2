//go:build linux && e2e

package layer2

// Network-namespace tests: a real responder on a veth inside a namespace
// this test creates, and a client in a second one. Nothing here opens a
// socket or sends a frame in the namespace the test runs in; every socket
// is opened by inNetns on a thread switched into a test namespace, and every
// ip(8) command names its namespace with -n or "netns exec".

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ironlb/ironlb/hack/netnstest"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// runID makes this run's namespace names unique, so parallel runs on one
// machine (and leftovers of a killed run) never collide.
var runID = func() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

// created lists the namespaces this run made, for the last-resort cleanup in
// TestMain (a test's own t.Cleanup removes them first).
var created struct {
	sync.Mutex
	names []string
}

func TestMain(m *testing.M) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		removeCreated()
		os.Exit(2)
	}()
	code := m.Run()
	removeCreated()
	os.Exit(code)
}

func removeCreated() {
	created.Lock()
	defer created.Unlock()
	for _, ns := range created.names {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	created.names = nil
}

// Lab addresses (DESIGN.md "Network safety"): 198.51.100.0/24 and
// 2001:db8:100::/64 only. The VIPs are never configured on an interface.
var (
	labNodeMAC   = net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x11}
	labClientMAC = net.HardwareAddr{0x02, 0x1b, 0, 0, 0, 0x02}
)

// lab is two namespaces joined by a veth pair: node (where the responder
// runs, interface va, 198.51.100.11) and client (vb, 198.51.100.2).
type lab struct {
	node, client string
}

var labSeq struct {
	sync.Mutex
	n int
}

func newLab(t *testing.T) *lab {
	t.Helper()
	netnstest.Require(t)
	labSeq.Lock()
	labSeq.n++
	n := labSeq.n
	labSeq.Unlock()
	l := &lab{
		node:   fmt.Sprintf("l2t-%s-%d-a", runID, n),
		client: fmt.Sprintf("l2t-%s-%d-b", runID, n),
	}
	created.Lock()
	created.names = append(created.names, l.node, l.client)
	created.Unlock()
	// Registered before anything exists, so that every failure below still
	// removes whatever was made. Deleting a namespace destroys its veth end,
	// and with it the peer.
	t.Cleanup(func() {
		for _, ns := range []string{l.node, l.client} {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil &&
				!strings.Contains(string(out), "No such file") {
				t.Errorf("removing namespace %s: %v: %s", ns, err, out)
			}
		}
	})

	sysctls := func(ns string, kv ...string) {
		var sh []string
		for i := 0; i < len(kv); i += 2 {
			sh = append(sh, fmt.Sprintf("echo %s > /proc/sys/%s", kv[i+1], strings.ReplaceAll(kv[i], ".", "/")))
		}
		// "ip netns exec" guarantees the writes land in ns: /proc/sys/net is
		// per network namespace of the writing process.
		run(t, "ip", "netns", "exec", ns, "sh", "-ec", strings.Join(sh, "; "))
	}
	run(t, "ip", "netns", "add", l.node)
	run(t, "ip", "netns", "add", l.client)
	for _, ns := range []string{l.node, l.client} {
		// Skip duplicate address detection so addresses (link-local
		// included) are usable at once instead of after about a second.
		sysctls(ns,
			"net.ipv6.conf.all.accept_dad", "0",
			"net.ipv6.conf.default.accept_dad", "0")
	}
	// The node's kernel must never answer for an address it does not hold
	// on the receiving interface, nor announce the wrong source: only the
	// responder speaks for the VIPs.
	sysctls(l.node,
		"net.ipv4.conf.all.arp_ignore", "1",
		"net.ipv4.conf.default.arp_ignore", "1",
		"net.ipv4.conf.all.arp_announce", "2",
		"net.ipv4.conf.default.arp_announce", "2")
	// Created inside node with the peer moved straight into client, so
	// that nothing ever appears in the namespace this test runs in.
	run(t, "ip", "-n", l.node, "link", "add", "va", "address", labNodeMAC.String(), "type", "veth",
		"peer", "name", "vb", "address", labClientMAC.String(), "netns", l.client)
	for _, c := range []struct{ ns, dev, v4, v6 string }{
		{l.node, "va", "198.51.100.11/24", "2001:db8:100::11/64"},
		{l.client, "vb", "198.51.100.2/24", "2001:db8:100::2/64"},
	} {
		run(t, "ip", "-n", c.ns, "link", "set", "lo", "up")
		run(t, "ip", "-n", c.ns, "addr", "add", c.v4, "dev", c.dev)
		run(t, "ip", "-n", c.ns, "addr", "add", c.v6, "dev", c.dev, "nodad")
		run(t, "ip", "-n", c.ns, "link", "set", c.dev, "up")
	}
	for _, c := range []struct{ ns, dev string }{{l.node, "va"}, {l.client, "vb"}} {
		waitFor(t, "a link-local address on "+c.dev, func() bool {
			out := run(t, "ip", "-n", c.ns, "-6", "addr", "show", "dev", c.dev, "scope", "link")
			return strings.Contains(out, "fe80::") && !strings.Contains(out, "tentative")
		})
	}
	return l
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNetns runs fn on an OS thread switched into namespace ns. Sockets fn
// opens stay in ns for their lifetime. It uses a goroutine of its own: if
// switching back failed, that goroutine ends with its thread still locked,
// and the runtime destroys the thread rather than reuse it elsewhere.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leaving %s: %w", ns, err))
			return // thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// rig is a running responder on the lab's node and raw sockets on its
// client.
type rig struct {
	lab      *lab
	a        *Announcer
	nodeIfi  net.Interface
	client   net.Interface
	arpConn  *packet.Conn
	ipv6Conn *packet.Conn
}

func newRig(t *testing.T, schedule []time.Duration) *rig {
	t.Helper()
	return newRigWith(t, Options{Schedule: schedule})
}

// newRigWith is newRig with more of the announcer's options; Dial is set
// here.
func newRigWith(t *testing.T, opts Options) *rig {
	t.Helper()
	l := newLab(t)
	r := &rig{lab: l}

	var ifis []net.Interface
	var carrier bool
	if err := inNetns(l.node, func() (err error) {
		if ifis, err = Interfaces(nil); err != nil {
			return err
		}
		carrier, err = HasCarrier("va")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifis {
		names = append(names, i.Name)
	}
	// lo is not eligible; va is.
	if diff := cmp.Diff([]string{"va"}, names); diff != "" {
		t.Fatalf("Interfaces(nil) in the node namespace (-want +got):\n%s", diff)
	}
	if !carrier {
		t.Fatal("HasCarrier(va) = false on an up veth with an up peer")
	}
	r.nodeIfi = ifis[0]

	ctx, cancel := context.WithCancel(context.Background())
	opts.Dial = func(ifi *net.Interface) (c Conns, err error) {
		err = inNetns(l.node, func() error {
			c, err = Dial(ifi)
			return err
		})
		return c, err
	}
	r.a = New(ctx, opts)
	// Stop the responder before the namespaces go (cleanups run last-in
	// first-out, so this runs before newLab's).
	t.Cleanup(func() {
		r.a.Close()
		cancel()
	})
	if err := r.a.SetInterfaces(ifis); err != nil {
		t.Fatal(err)
	}

	if err := inNetns(l.client, func() error {
		ifi, err := net.InterfaceByName("vb")
		if err != nil {
			return err
		}
		r.client = *ifi
		if r.arpConn, err = packet.Listen(ifi, packet.Raw, etherTypeARP, nil); err != nil {
			return err
		}
		r.ipv6Conn, err = packet.Listen(ifi, packet.Raw, etherTypeIPv6, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.arpConn.Close()
		r.ipv6Conn.Close()
	})
	return r
}

type captured struct {
	at    time.Duration // since the capture started
	frame []byte
}

// capture reads frames from c for d and keeps those keep accepts. It may
// run on a goroutine of its own, so it reports errors without stopping the
// test.
func capture(t *testing.T, c *packet.Conn, d time.Duration, keep func([]byte) bool) []captured {
	start := time.Now()
	if err := c.SetReadDeadline(start.Add(d)); err != nil {
		t.Error(err)
		return nil
	}
	var out []captured
	buf := make([]byte, maxFrameLength)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return out
			}
			t.Errorf("capture: %v", err)
			return out
		}
		if keep(buf[:n]) {
			out = append(out, captured{time.Since(start), append([]byte(nil), buf[:n]...)})
		}
	}
}

// drain discards frames already queued on c, such as replies to the client
// kernel's own solicitations, so that a capture sees only what follows.
func drain(t *testing.T, c *packet.Conn) {
	t.Helper()
	capture(t, c, 5*time.Millisecond, func([]byte) bool { return false })
}

func send(t *testing.T, c *packet.Conn, frame []byte) {
	t.Helper()
	if _, err := c.WriteTo(frame, &packet.Addr{HardwareAddr: net.HardwareAddr(frame[0:6])}); err != nil {
		t.Fatalf("sending from the client: %v", err)
	}
}

// arpFrom keeps ARP frames sent by the node about ip.
func arpFrom(ip netip.Addr) func([]byte) bool {
	return func(f []byte) bool {
		s := summarizeARP(f)
		return s.EthSrc == labNodeMAC.String() && s.SenderIP == ip.String()
	}
}

// naFrom keeps Neighbor Advertisements sent by the node for target.
func naFrom(target netip.Addr) func([]byte) bool {
	return func(f []byte) bool {
		_, src, et, pkt, ok := ethHeader(f)
		if !ok || et != etherTypeIPv6 || !sameMAC(src, labNodeMAC) || len(pkt) < ipv6HeaderLen+24 ||
			pkt[6] != protoICMPv6 || pkt[ipv6HeaderLen] != icmpTypeNA {
			return false
		}
		return summarizeNA(f).Target == target.String()
	}
}

func TestNetnsARP(t *testing.T) {
	schedule := []time.Duration{0, 50 * time.Millisecond, 150 * time.Millisecond}
	r := newRig(t, schedule)

	// Gaining the VIP: the client sees the whole burst, both forms per round.
	done := make(chan []captured)
	go func() { done <- capture(t, r.arpConn, 400*time.Millisecond, arpFrom(vip4)) }()
	time.Sleep(20 * time.Millisecond) // let the capture start reading
	if err := r.a.SetOwned(map[netip.Addr][]string{vip4: nil}); err != nil {
		t.Fatal(err)
	}
	burst := <-done
	var ops []arp.Operation
	var at []string
	for _, c := range burst {
		s := summarizeARP(c.frame)
		if s.EthDst != "ff:ff:ff:ff:ff:ff" || s.SenderMAC != labNodeMAC.String() || s.TargetIP != vip4.String() {
			t.Errorf("bad gratuitous ARP: %+v", s)
		}
		ops = append(ops, s.Op)
		at = append(at, c.at.Round(time.Millisecond).String())
	}
	wantOps := []arp.Operation{1, 2, 1, 2, 1, 2}
	if diff := cmp.Diff(wantOps, ops); diff != "" {
		t.Errorf("gratuitous ARP operations (-want +got):\n%s", diff)
	}
	t.Logf("gratuitous ARP burst seen by the client at %v (schedule %v)", at, schedule)
	if len(burst) == 6 {
		if gap := burst[4].at - burst[0].at; gap < 140*time.Millisecond {
			t.Errorf("last round %v after the first, want about 150ms", gap)
		}
	}

	// A request for the owned VIP: exactly one reply, from the node's MAC.
	ask := func(target netip.Addr) []captured {
		req := arpRequest(labClientMAC, netip.MustParseAddr("198.51.100.2"), target)
		drain(t, r.arpConn)
		res := make(chan []captured)
		go func() { res <- capture(t, r.arpConn, 300*time.Millisecond, arpFrom(target)) }()
		time.Sleep(10 * time.Millisecond)
		send(t, r.arpConn, req)
		return <-res
	}
	replies := ask(vip4)
	var got []*arpSummary
	for _, c := range replies {
		got = append(got, summarizeARP(c.frame))
	}
	want := []*arpSummary{{
		EthDst: labClientMAC.String(), EthSrc: labNodeMAC.String(), Op: arp.OperationReply,
		SenderMAC: labNodeMAC.String(), SenderIP: vip4.String(),
		TargetMAC: labClientMAC.String(), TargetIP: "198.51.100.2",
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replies to a request for the owned VIP (-want +got):\n%s", diff)
	}
	if n := len(ask(other4)); n != 0 {
		t.Errorf("%d replies for an unowned address, want 0", n)
	}

	measureARPLatency(t, r, 300)

	// Losing it: silence at once.
	if err := r.a.SetOwned(nil); err != nil {
		t.Fatal(err)
	}
	if n := len(ask(vip4)); n != 0 {
		t.Errorf("%d replies after the VIP was lost, want 0", n)
	}

	// The client's own kernel resolves the VIP through the responder.
	if err := r.a.SetOwned(map[netip.Addr][]string{vip4: nil}); err != nil {
		t.Fatal(err)
	}
	kernelResolves(t, r, vip4)

	s := r.a.Stats()
	t.Logf("stats: %+v", s)
	if s.ARP.Malformed != 0 || s.ARP.SendErrors != 0 || s.ARP.Replies < 300 {
		t.Errorf("unexpected ARP counters %+v", s.ARP)
	}
}

// measureARPLatency times n request/reply exchanges as the client sees
// them: from the write of the request to the read of the reply, so it
// includes both sockets and the Go scheduler on a shared machine.
func measureARPLatency(t *testing.T, r *rig, n int) {
	t.Helper()
	req := arpRequest(labClientMAC, netip.MustParseAddr("198.51.100.2"), vip4)
	buf := make([]byte, maxFrameLength)
	var rtts []time.Duration
	for range n {
		start := time.Now()
		send(t, r.arpConn, req)
		if err := r.arpConn.SetReadDeadline(start.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		for {
			m, _, err := r.arpConn.ReadFrom(buf)
			if err != nil {
				t.Fatalf("no reply within 1s: %v", err)
			}
			if s := summarizeARP(buf[:m]); s.Op == arp.OperationReply && s.SenderIP == vip4.String() {
				rtts = append(rtts, time.Since(start))
				break
			}
		}
	}
	slices.Sort(rtts)
	q := func(p float64) time.Duration { return rtts[int(p*float64(len(rtts)-1))] }
	t.Logf("ARP request->reply over veth, n=%d: p50 %v, p90 %v, p99 %v, max %v",
		n, q(0.5), q(0.9), q(0.99), rtts[len(rtts)-1])
	if p99 := q(0.99); p99 > 50*time.Millisecond {
		// Far above the 1 ms target, but a loaded CI machine must not flake
		// this; the figure is logged for the benchmark notes.
		t.Errorf("ARP reply p99 %v", p99)
	}
}

// kernelResolves makes the client's kernel resolve ip (by sending a UDP
// datagram to it) and checks that its neighbour entry carries the node's
// MAC.
func kernelResolves(t *testing.T, r *rig, ip netip.Addr) {
	t.Helper()
	if err := inNetns(r.lab.client, func() error {
		c, err := net.Dial("udp", netip.AddrPortFrom(ip, 9).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("ironlb"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	family := "-4"
	if ip.Is6() {
		family = "-6"
	}
	var out string
	deadline := time.Now().Add(3 * time.Second)
	for {
		out = run(t, "ip", "-n", r.lab.client, family, "neigh", "show", ip.String(), "dev", "vb")
		if strings.Contains(out, "lladdr "+labNodeMAC.String()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client kernel did not resolve %s to %s: %q", ip, labNodeMAC, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNetnsNDP(t *testing.T) {
	schedule := []time.Duration{0, 50 * time.Millisecond, 150 * time.Millisecond}
	r := newRig(t, schedule)
	group := "ff02::1:ff00:100" // solicited-node group of vip6

	// Gaining the VIP: unsolicited NAs to all-nodes, and the node joins the
	// solicited-node group.
	done := make(chan []captured)
	go func() { done <- capture(t, r.ipv6Conn, 400*time.Millisecond, naFrom(vip6)) }()
	time.Sleep(20 * time.Millisecond)
	if err := r.a.SetOwned(map[netip.Addr][]string{vip6: nil}); err != nil {
		t.Fatal(err)
	}
	burst := <-done
	var got []*naSummary
	var at []string
	for _, c := range burst {
		got = append(got, summarizeNA(c.frame))
		at = append(at, c.at.Round(time.Millisecond).String())
	}
	unsolicited := &naSummary{
		EthDst: "33:33:00:00:00:01", EthSrc: labNodeMAC.String(), Src: vip6.String(), Dst: "ff02::1",
		HopLimit: 255, ChecksumOK: true, Override: true, Target: vip6.String(), TargetLLA: labNodeMAC.String(),
	}
	if diff := cmp.Diff([]*naSummary{unsolicited, unsolicited, unsolicited}, got); diff != "" {
		t.Errorf("unsolicited NAs (-want +got):\n%s", diff)
	}
	t.Logf("unsolicited NA burst seen by the client at %v (schedule %v)", at, schedule)
	if out := run(t, "ip", "-n", r.lab.node, "-6", "maddr", "show", "dev", "va"); !strings.Contains(out, group) {
		t.Errorf("node did not join %s:\n%s", group, out)
	}

	solicit := func(f nsFrame) []captured {
		f.ethSrc = labClientMAC
		drain(t, r.ipv6Conn)
		res := make(chan []captured)
		go func() { res <- capture(t, r.ipv6Conn, 300*time.Millisecond, naFrom(f.target)) }()
		time.Sleep(10 * time.Millisecond)
		send(t, r.ipv6Conn, f.bytes())
		return <-res
	}
	solicited := &naSummary{
		EthDst: labClientMAC.String(), EthSrc: labNodeMAC.String(), Src: vip6.String(), Dst: "2001:db8:100::2",
		HopLimit: 255, ChecksumOK: true, Solicited: true, Override: true, Target: vip6.String(), TargetLLA: labNodeMAC.String(),
	}
	client6 := netip.MustParseAddr("2001:db8:100::2")
	tests := []struct {
		name string
		ns   nsFrame
		want []*naSummary
	}{
		{"multicast NS to the solicited-node group", nsFrame{src: client6, target: vip6}, []*naSummary{solicited}},
		{"unicast NS to the VIP", nsFrame{src: client6, dst: vip6, ethDst: labNodeMAC, target: vip6}, []*naSummary{solicited}},
		{"NS for an unowned address", nsFrame{src: client6, target: other6}, nil},
	}
	for _, tt := range tests {
		var got []*naSummary
		for _, c := range solicit(tt.ns) {
			got = append(got, summarizeNA(c.frame))
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: NAs (-want +got):\n%s", tt.name, diff)
		}
	}

	// The client's kernel resolves the VIP with its own multicast NS.
	kernelResolves(t, r, vip6)

	// Losing it: no answer, and the group is left.
	if err := r.a.SetOwned(nil); err != nil {
		t.Fatal(err)
	}
	if n := len(solicit(nsFrame{src: client6, target: vip6})); n != 0 {
		t.Errorf("%d NAs after the VIP was lost, want 0", n)
	}
	if out := run(t, "ip", "-n", r.lab.node, "-6", "maddr", "show", "dev", "va"); strings.Contains(out, group) {
		t.Errorf("node still in %s after losing the VIP:\n%s", group, out)
	}
	s := r.a.Stats()
	t.Logf("stats: %+v", s)
	if s.NDP.Malformed != 0 || s.NDP.SendErrors != 0 || s.NDP.Gratuitous != 3 {
		t.Errorf("unexpected NDP counters %+v", s.NDP)
	}
}

func TestNetnsCarrier(t *testing.T) {
	l := newLab(t)
	check := func(want bool) {
		t.Helper()
		var got bool
		if err := inNetns(l.node, func() (err error) {
			got, err = HasCarrier("va")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("HasCarrier(va) = %v, want %v", got, want)
		}
	}
	check(true)
	// The peer going down is what a pulled cable looks like from va.
	run(t, "ip", "-n", l.client, "link", "set", "vb", "down")
	waitFor(t, "carrier loss", func() bool {
		var c bool
		_ = inNetns(l.node, func() (err error) { c, err = HasCarrier("va"); return err })
		return !c
	})
	check(false)
	run(t, "ip", "-n", l.client, "link", "set", "vb", "up")
	waitFor(t, "carrier", func() bool {
		var c bool
		_ = inNetns(l.node, func() (err error) { c, err = HasCarrier("va"); return err })
		return c
	})

	// A bridge member is not eligible; the bridge is.
	run(t, "ip", "-n", l.node, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", l.node, "link", "set", "va", "master", "br0")
	run(t, "ip", "-n", l.node, "link", "set", "br0", "up")
	var names []string
	if err := inNetns(l.node, func() error {
		ifis, err := Interfaces(nil)
		for _, i := range ifis {
			names = append(names, i.Name)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"br0"}, names); diff != "" {
		t.Errorf("Interfaces with va enslaved to br0 (-want +got):\n%s", diff)
	}
}
