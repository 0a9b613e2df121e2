package layer2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
)

// fakeConn is an in-memory net.PacketConn: the test pushes inbound frames
// with deliver and reads what the responder sent with sent. Having no
// socket, it lets a test run in a synctest bubble, where the responders'
// timers run on the bubble's clock: tests that wait for timers do that.
type fakeConn struct {
	in     chan []byte
	closed chan struct{}
	once   sync.Once

	mu     sync.Mutex
	out    [][]byte
	notify chan struct{} // receives a value after each write, never blocks
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan []byte), closed: make(chan struct{}), notify: make(chan struct{}, 1)}
}

func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case f := <-c.in:
		return copy(b, f), nil, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.mu.Lock()
	c.out = append(c.out, append([]byte(nil), b...))
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return len(b), nil
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *fakeConn) LocalAddr() net.Addr              { return nil }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

// deliver hands one frame to the responder; it returns once a read loop has
// taken it.
func (c *fakeConn) deliver(t *testing.T, frame []byte) {
	t.Helper()
	select {
	case c.in <- frame:
	case <-time.After(5 * time.Second):
		t.Fatal("responder did not read the frame")
	}
}

func (c *fakeConn) sent() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.out...)
}

// fakeGroups records joins and leaves.
type fakeGroups struct {
	mu      sync.Mutex
	log     []string
	failFor netip.Addr
	closed  bool
}

func (g *fakeGroups) JoinGroup(a netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a == g.failFor {
		return errors.New("injected join failure")
	}
	g.log = append(g.log, "join "+a.String())
	return nil
}

func (g *fakeGroups) LeaveGroup(a netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.log = append(g.log, "leave "+a.String())
	return nil
}

func (g *fakeGroups) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	return nil
}

func (g *fakeGroups) events() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.log...)
}

type fakeIface struct {
	ifi    net.Interface
	arp    *fakeConn
	ndp    *fakeConn
	groups *fakeGroups
}

// fakeNet hands out in-memory connections through Options.Dial.
type fakeNet struct {
	mu     sync.Mutex
	ifaces map[string]*fakeIface
	dials  int
	fail   map[string]error // dialing these interfaces fails
}

func (n *fakeNet) dial(ifi *net.Interface) (Conns, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.fail[ifi.Name]; err != nil {
		return Conns{}, err
	}
	if n.ifaces == nil {
		n.ifaces = map[string]*fakeIface{}
	}
	f := &fakeIface{ifi: *ifi, arp: newFakeConn(), ndp: newFakeConn(), groups: &fakeGroups{}}
	n.ifaces[ifi.Name] = f
	n.dials++
	return Conns{ARP: f.arp, NDP: f.ndp, Groups: f.groups}, nil
}

func (n *fakeNet) iface(name string) *fakeIface {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ifaces[name]
}

func testIface(name string, idx int) net.Interface {
	return net.Interface{Name: name, Index: idx, HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 1, byte(idx)}, Flags: net.FlagUp}
}

// newTestAnnouncer starts an Announcer over fake connections on the given
// interfaces.
func newTestAnnouncer(t *testing.T, schedule []time.Duration, names ...string) (*Announcer, *fakeNet) {
	t.Helper()
	fn := &fakeNet{}
	return startTestAnnouncer(t, Options{Schedule: schedule, Dial: fn.dial}, fn, names...), fn
}

// startTestAnnouncer starts an Announcer with opts (whose Dial is fn's) on
// fake interfaces with the given names, closed when the test ends.
func startTestAnnouncer(t *testing.T, opts Options, fn *fakeNet, names ...string) *Announcer {
	t.Helper()
	a := New(t.Context(), opts)
	t.Cleanup(func() { a.Close() })
	var ifis []net.Interface
	for i, n := range names {
		ifis = append(ifis, testIface(n, i+1))
	}
	if err := a.SetInterfaces(ifis); err != nil {
		t.Fatal(err)
	}
	return a
}

// waitFor polls cond until it holds; responders work asynchronously.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// exchange delivers frame and returns what the responder sent in reply. A
// read loop handles one frame completely before reading the next, so once a
// second (malformed, one-byte) frame has been taken, the reply to the first
// is in c.sent().
func exchange(t *testing.T, c *fakeConn, frame []byte) [][]byte {
	t.Helper()
	sentBefore := len(c.sent())
	c.deliver(t, frame)
	c.deliver(t, []byte{0})
	return c.sent()[sentBefore:]
}

func TestAnnouncerAnswersOnlyOwned(t *testing.T) {
	a, fn := newTestAnnouncer(t, []time.Duration{}, "eth0")
	eth0 := fn.iface("eth0")
	mac := eth0.ifi.HardwareAddr

	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}

	got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4))
	want := []*arpSummary{{
		EthDst: peerMAC.String(), EthSrc: mac.String(), Op: 2,
		SenderMAC: mac.String(), SenderIP: vip4.String(), TargetMAC: peerMAC.String(), TargetIP: peerIP.String(),
	}}
	if diff := cmp.Diff(want, summarize(got, summarizeARP)); diff != "" {
		t.Errorf("ARP reply for owned address (-want +got):\n%s", diff)
	}
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, other4)); len(got) != 0 {
		t.Errorf("ARP request for unowned address got %d replies", len(got))
	}

	got = exchange(t, eth0.ndp, nsFrame{src: peerIP6, target: vip6}.bytes())
	wantNA := []*naSummary{{
		EthDst: peerMAC.String(), EthSrc: mac.String(), Src: vip6.String(), Dst: peerIP6.String(),
		HopLimit: 255, ChecksumOK: true, Solicited: true, Override: true, Target: vip6.String(), TargetLLA: mac.String(),
	}}
	if diff := cmp.Diff(wantNA, summarize(got, summarizeNA)); diff != "" {
		t.Errorf("NA for owned address (-want +got):\n%s", diff)
	}
	if got := exchange(t, eth0.ndp, nsFrame{src: peerIP6, target: other6}.bytes()); len(got) != 0 {
		t.Errorf("NS for unowned address got %d replies", len(got))
	}

	// Losing the addresses silences the responder at once.
	if err := a.SetOwned(nil); err != nil {
		t.Fatal(err)
	}
	if got := exchange(t, eth0.arp, arpRequest(peerMAC, peerIP, vip4)); len(got) != 0 {
		t.Errorf("ARP request after loss got %d replies", len(got))
	}
	if got := exchange(t, eth0.ndp, nsFrame{src: peerIP6, target: vip6}.bytes()); len(got) != 0 {
		t.Errorf("NS after loss got %d replies", len(got))
	}

	wantStats := Stats{
		// Each exchange also delivers one flush byte, counted malformed.
		ARP: FamilyStats{Requests: 3, Replies: 1, Malformed: 3},
		NDP: FamilyStats{Requests: 3, Replies: 1, Malformed: 3},
	}
	// The last flush byte may still be being counted.
	waitFor(t, "the last frame to be counted", func() bool {
		s := a.Stats()
		return s.ARP.Malformed == 3 && s.NDP.Malformed == 3
	})
	if diff := cmp.Diff(wantStats, a.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func summarize[T any](frames [][]byte, f func([]byte) *T) []*T {
	var out []*T
	for _, fr := range frames {
		out = append(out, f(fr))
	}
	return out
}

func TestAnnouncerAllowList(t *testing.T) {
	a, fn := newTestAnnouncer(t, []time.Duration{}, "eth0", "eth1")
	if err := a.SetOwned(map[netip.Addr][]string{vip4: {"eth1"}, other4: {}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		iface  string
		target netip.Addr
		want   int
	}{
		{"eth0", vip4, 0},
		{"eth1", vip4, 1},
		{"eth0", other4, 0}, // empty allow-list: nowhere
		{"eth1", other4, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.iface, tt.target), func(t *testing.T) {
			got := exchange(t, fn.iface(tt.iface).arp, arpRequest(peerMAC, peerIP, tt.target))
			if len(got) != tt.want {
				t.Errorf("got %d replies, want %d", len(got), tt.want)
			}
		})
	}
}

func TestAnnouncerGratuitousBurst(t *testing.T) {
	synctest.Test(t, testAnnouncerGratuitousBurst)
}

func testAnnouncerGratuitousBurst(t *testing.T) {
	schedule := []time.Duration{0, 20 * time.Millisecond, 40 * time.Millisecond}
	a, fn := newTestAnnouncer(t, schedule, "eth0")
	eth0 := fn.iface("eth0")
	mac := eth0.ifi.HardwareAddr

	start := time.Now()
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three ARP rounds", func() bool { return len(eth0.arp.sent()) == 6 })
	waitFor(t, "three NDP rounds", func() bool { return len(eth0.ndp.sent()) == 3 })
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("burst finished after %v, before its last offset", d)
	}

	var wantARP []*arpSummary
	for range schedule {
		for _, f := range gratuitousARP(mac, vip4) {
			wantARP = append(wantARP, summarizeARP(f))
		}
	}
	if diff := cmp.Diff(wantARP, summarize(eth0.arp.sent(), summarizeARP)); diff != "" {
		t.Errorf("gratuitous ARP (-want +got):\n%s", diff)
	}
	var wantNA []*naSummary
	for range schedule {
		wantNA = append(wantNA, summarizeNA(unsolicitedNA(mac, vip6)))
	}
	if diff := cmp.Diff(wantNA, summarize(eth0.ndp.sent(), summarizeNA)); diff != "" {
		t.Errorf("unsolicited NA (-want +got):\n%s", diff)
	}
	s := a.Stats()
	if s.ARP.Gratuitous != 6 || s.NDP.Gratuitous != 3 {
		t.Errorf("Gratuitous counters = %d ARP, %d NDP; want 6, 3", s.ARP.Gratuitous, s.NDP.Gratuitous)
	}

	// Setting the same set again is not a gain: no new burst.
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	synctest.Wait()
	if n := len(eth0.arp.sent()); n != 6 {
		t.Errorf("re-setting an unchanged set sent %d more ARP frames", n-6)
	}
}

func TestAnnouncerLossCancelsBurst(t *testing.T) {
	synctest.Test(t, testAnnouncerLossCancelsBurst)
}

func testAnnouncerLossCancelsBurst(t *testing.T) {
	a, fn := newTestAnnouncer(t, []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond}, "eth0")
	eth0 := fn.iface("eth0")
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first round", func() bool { return len(eth0.arp.sent()) == 2 && len(eth0.ndp.sent()) == 1 })
	if err := a.SetOwned(nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	synctest.Wait()
	if n, m := len(eth0.arp.sent()), len(eth0.ndp.sent()); n != 2 || m != 1 {
		t.Errorf("after loss: %d ARP and %d NDP frames in total, want 2 and 1", n, m)
	}
}

func TestAnnouncerSolicitedNodeGroups(t *testing.T) {
	a, fn := newTestAnnouncer(t, []time.Duration{}, "eth0")
	groups := fn.iface("eth0").groups
	// Same low 24 bits: one solicited-node group for both.
	twin := netip.MustParseAddr("2001:db8:200::100")
	steps := []struct {
		owned []netip.Addr
		want  []string
	}{
		{[]netip.Addr{vip6, vip4}, []string{"join ff02::1:ff00:100"}},
		{[]netip.Addr{vip6, twin}, nil},
		{[]netip.Addr{twin, other6}, []string{"join ff02::1:ff00:101"}},
		{[]netip.Addr{other6}, []string{"leave ff02::1:ff00:100"}},
		{nil, []string{"leave ff02::1:ff00:101"}},
	}
	for i, st := range steps {
		before := len(groups.events())
		owned := map[netip.Addr][]string{}
		for _, ip := range st.owned {
			owned[ip] = nil
		}
		if err := a.SetOwned(owned); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(st.want, groups.events()[before:], cmp.Transformer("nilIsEmpty", func(s []string) []string {
			if len(s) == 0 {
				return nil
			}
			return s
		})); diff != "" {
			t.Errorf("step %d: group changes (-want +got):\n%s", i, diff)
		}
	}
}

func TestAnnouncerJoinFailureStillAnswers(t *testing.T) {
	a, fn := newTestAnnouncer(t, []time.Duration{}, "eth0")
	eth0 := fn.iface("eth0")
	eth0.groups.failFor, _ = netip.ParseAddr("ff02::1:ff00:100")
	if err := a.SetOwned(map[netip.Addr][]string{vip6: nil}); err == nil {
		t.Error("SetOwned hid the join failure")
	}
	unicast := nsFrame{src: peerIP6, dst: vip6, ethDst: eth0.ifi.HardwareAddr, target: vip6}.bytes()
	if got := exchange(t, eth0.ndp, unicast); len(got) != 1 {
		t.Errorf("unicast NS after failed join: %d replies, want 1", len(got))
	}
	// Losing it must not try to leave a group never joined.
	if err := a.SetOwned(nil); err != nil {
		t.Errorf("SetOwned(nil) = %v", err)
	}
	if diff := cmp.Diff([]string(nil), eth0.groups.events()); diff != "" {
		t.Errorf("group changes (-want +got):\n%s", diff)
	}
}

func TestAnnouncerSetInterfaces(t *testing.T) {
	a, fn := newTestAnnouncer(t, []time.Duration{0}, "eth0")
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil}); err != nil {
		t.Fatal(err)
	}
	eth0 := fn.iface("eth0")
	waitFor(t, "eth0's announcement", func() bool { return len(eth0.arp.sent()) == 2 })

	// A new interface announces what is already owned, as a gain.
	if err := a.SetInterfaces([]net.Interface{testIface("eth0", 1), testIface("eth1", 2)}); err != nil {
		t.Fatal(err)
	}
	eth1 := fn.iface("eth1")
	waitFor(t, "eth1's announcement", func() bool { return len(eth1.arp.sent()) == 2 })
	if n := len(eth0.arp.sent()); n != 2 {
		t.Errorf("eth0 announced again (%d frames) though it did not change", n)
	}
	if got := a.Interfaces(); len(got) != 2 || got[0].Name != "eth0" || got[1].Name != "eth1" ||
		got[1].HardwareAddr.String() != testIface("eth1", 2).HardwareAddr.String() {
		t.Errorf("Interfaces() = %v, want eth0 and eth1 with their MACs", got)
	}

	// A removed interface is closed before SetInterfaces returns.
	if err := a.SetInterfaces([]net.Interface{testIface("eth1", 2)}); err != nil {
		t.Fatal(err)
	}
	if !eth0.arp.isClosed() || !eth0.ndp.isClosed() || !eth0.groups.closed {
		t.Error("eth0's connections are still open after it was removed")
	}
	// A changed MAC reopens the interface.
	moved := testIface("eth1", 2)
	moved.HardwareAddr = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	if err := a.SetInterfaces([]net.Interface{moved}); err != nil {
		t.Fatal(err)
	}
	if !eth1.arp.isClosed() || fn.iface("eth1") == eth1 {
		t.Error("eth1 was not reopened after its MAC changed")
	}
	if got := a.Interfaces(); len(got) != 1 || got[0].HardwareAddr.String() != moved.HardwareAddr.String() {
		t.Errorf("Interfaces() = %v after the MAC changed, want eth1 with %s", got, moved.HardwareAddr)
	}
	if err := a.SetInterfaces([]net.Interface{{Name: "tun0", Index: 7}}); err == nil {
		t.Error("an interface without a MAC was accepted")
	}
}

func TestAnnouncerSkipsUnannounceable(t *testing.T) {
	synctest.Test(t, testAnnouncerSkipsUnannounceable)
}

func testAnnouncerSkipsUnannounceable(t *testing.T) {
	a, fn := newTestAnnouncer(t, []time.Duration{0}, "eth0")
	owned := map[netip.Addr][]string{
		{}:                               nil,
		netip.IPv4Unspecified():          nil,
		netip.MustParseAddr("127.0.0.1"): nil,
		netip.MustParseAddr("ff02::1"):   nil,
		netip.MustParseAddr("::ffff:198.51.100.100"): nil, // counts as IPv4
	}
	if err := a.SetOwned(owned); err != nil {
		t.Fatal(err)
	}
	eth0 := fn.iface("eth0")
	waitFor(t, "the announcement", func() bool { return len(eth0.arp.sent()) == 2 })
	if got := summarizeARP(eth0.arp.sent()[0]).SenderIP; got != vip4.String() {
		t.Errorf("announced %s, want %s", got, vip4)
	}
	time.Sleep(20 * time.Millisecond)
	synctest.Wait()
	if n := len(eth0.arp.sent()) + len(eth0.ndp.sent()); n != 2 {
		t.Errorf("%d frames sent, want only the two for %s", n, vip4)
	}
}

func TestAnnouncerCloseStopsEverything(t *testing.T) {
	// A long schedule: Close must not wait for it.
	a, fn := newTestAnnouncer(t, []time.Duration{0, time.Hour}, "eth0", "eth1")
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { a.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	for _, name := range []string{"eth0", "eth1"} {
		f := fn.iface(name)
		if !f.arp.isClosed() || !f.ndp.isClosed() || !f.groups.closed {
			t.Errorf("%s: connections still open after Close", name)
		}
	}
	if err := a.SetOwned(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SetOwned after Close = %v, want ErrClosed", err)
	}
	if err := a.SetInterfaces(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SetInterfaces after Close = %v, want ErrClosed", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestAnnouncerContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	fn := &fakeNet{}
	a := New(ctx, Options{Dial: fn.dial})
	if err := a.SetInterfaces([]net.Interface{testIface("eth0", 1)}); err != nil {
		t.Fatal(err)
	}
	cancel()
	eth0 := fn.iface("eth0")
	waitFor(t, "sockets to close on cancel", func() bool { return eth0.arp.isClosed() && eth0.ndp.isClosed() })
	if err := a.SetOwned(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SetOwned after cancel = %v, want ErrClosed", err)
	}
	a.Close() // waits for the goroutines; must not hang
}

// TestAnnouncerConcurrent is for the race detector: SetOwned, Stats and the
// packet path all at once.
func TestAnnouncerConcurrent(t *testing.T) {
	a, fn := newTestAnnouncer(t, []time.Duration{0, time.Millisecond}, "eth0")
	eth0 := fn.iface("eth0")
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			owned := map[netip.Addr][]string{vip6: nil}
			if i%2 == 0 {
				owned[vip4] = nil
			}
			_ = a.SetOwned(owned)
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			_ = a.Stats()
		}
	})
	for _, c := range []*fakeConn{eth0.arp, eth0.ndp} {
		frame := arpRequest(peerMAC, peerIP, vip4)
		if c == eth0.ndp {
			frame = nsFrame{src: peerIP6, target: vip6}.bytes()
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				select {
				case c.in <- frame:
				case <-ctx.Done():
				}
			}
		})
	}
	wg.Wait()
	if s := a.Stats(); s.ARP.Requests == 0 || s.NDP.Replies == 0 {
		t.Errorf("no traffic handled: %+v", s)
	}
}

func TestAnnouncerRefresh(t *testing.T) {
	synctest.Test(t, testAnnouncerRefresh)
}

func testAnnouncerRefresh(t *testing.T) {
	fn := &fakeNet{}
	const refresh = 150 * time.Millisecond
	a := New(t.Context(), Options{Schedule: []time.Duration{0}, Dial: fn.dial, Refresh: refresh})
	t.Cleanup(func() { a.Close() })
	if err := a.SetInterfaces([]net.Interface{testIface("eth0", 1)}); err != nil {
		t.Fatal(err)
	}
	eth0 := fn.iface("eth0")
	mac := eth0.ifi.HardwareAddr
	start := time.Now()
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}
	// One burst round (2 ARP frames, 1 NA), then a round per refresh.
	waitFor(t, "three refresh rounds", func() bool { return len(eth0.arp.sent()) >= 8 && len(eth0.ndp.sent()) >= 4 })
	if d := time.Since(start); d < 3*refresh*9/10 {
		t.Errorf("three refreshes after %v, faster than every %v - 10 %%", d, refresh)
	}
	var wantARP []*arpSummary
	for _, f := range gratuitousARP(mac, vip4) {
		wantARP = append(wantARP, summarizeARP(f))
	}
	for i, f := range eth0.arp.sent() {
		got := summarizeARP(f)
		if !slices.ContainsFunc(wantARP, func(w *arpSummary) bool { return cmp.Equal(w, got) }) {
			t.Errorf("ARP frame %d is not a gratuitous ARP for %s: %+v", i, vip4, got)
		}
	}
	for _, f := range eth0.ndp.sent() {
		if diff := cmp.Diff(summarizeNA(unsolicitedNA(mac, vip6)), summarizeNA(f)); diff != "" {
			t.Errorf("refresh NA (-want +got):\n%s", diff)
		}
	}
	s := a.Stats()
	if s.ARP.Gratuitous != 2 || s.NDP.Gratuitous != 1 {
		t.Errorf("Gratuitous = %d ARP, %d NDP; want only the burst's 2, 1", s.ARP.Gratuitous, s.NDP.Gratuitous)
	}
	if s.ARP.Refreshes < 6 || s.NDP.Refreshes < 3 {
		t.Errorf("Refreshes = %d ARP, %d NDP; want at least 6, 3", s.ARP.Refreshes, s.NDP.Refreshes)
	}

	// A lost address is not refreshed any more; the kept one is.
	if err := a.SetOwned(map[netip.Addr][]string{vip6: nil}); err != nil {
		t.Fatal(err)
	}
	arpAfter, ndpAfter := len(eth0.arp.sent()), len(eth0.ndp.sent())
	time.Sleep(3 * refresh)
	synctest.Wait()
	if n := len(eth0.arp.sent()); n != arpAfter {
		t.Errorf("%d ARP frames for a lost address", n-arpAfter)
	}
	if n := len(eth0.ndp.sent()); n < ndpAfter+2 {
		t.Errorf("%d NA refreshes in 3 intervals for the kept address, want at least 2", n-ndpAfter)
	}
}

func TestAnnouncerRefreshOff(t *testing.T) {
	synctest.Test(t, testAnnouncerRefreshOff)
}

func testAnnouncerRefreshOff(t *testing.T) {
	fn := &fakeNet{}
	a := New(t.Context(), Options{Schedule: []time.Duration{0}, Dial: fn.dial, Refresh: -1})
	t.Cleanup(func() { a.Close() })
	if err := a.SetInterfaces([]net.Interface{testIface("eth0", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil}); err != nil {
		t.Fatal(err)
	}
	eth0 := fn.iface("eth0")
	waitFor(t, "the burst", func() bool { return len(eth0.arp.sent()) == 2 })
	time.Sleep(300 * time.Millisecond)
	synctest.Wait()
	if n := len(eth0.arp.sent()); n != 2 {
		t.Errorf("%d frames with refresh off, want the burst's 2", n)
	}
}

// TestAnnouncerRefreshPerAddress: SetRefresh turns refreshing on for an
// address when the default is off, off for one when it is on, and a change
// applies to addresses already owned.
func TestAnnouncerRefreshPerAddress(t *testing.T) {
	synctest.Test(t, testAnnouncerRefreshPerAddress)
}

func testAnnouncerRefreshPerAddress(t *testing.T) {
	fn := &fakeNet{}
	a := New(t.Context(), Options{Schedule: []time.Duration{0}, Dial: fn.dial, Refresh: -1})
	t.Cleanup(func() { a.Close() })
	if err := a.SetInterfaces([]net.Interface{testIface("eth0", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil, vip6: nil}); err != nil {
		t.Fatal(err)
	}
	eth0 := fn.iface("eth0")
	waitFor(t, "the burst", func() bool { return len(eth0.arp.sent()) == 2 && len(eth0.ndp.sent()) == 1 })
	// vip4's pool refreshes every 100 ms; vip6 keeps the default (off).
	a.SetRefresh(map[netip.Addr]time.Duration{vip4: 100 * time.Millisecond})
	waitFor(t, "vip4's refreshes", func() bool { return len(eth0.arp.sent()) >= 6 })
	if n := len(eth0.ndp.sent()); n != 1 {
		t.Errorf("%d NA frames for vip6, whose refresh is off, want the burst's 1", n)
	}
	// Off again for vip4 (a pool's refresh-interval 0).
	a.SetRefresh(map[netip.Addr]time.Duration{vip4: 0})
	time.Sleep(50 * time.Millisecond)
	synctest.Wait()
	n := len(eth0.arp.sent())
	time.Sleep(300 * time.Millisecond)
	synctest.Wait()
	if m := len(eth0.arp.sent()); m != n {
		t.Errorf("%d ARP refreshes after vip4's refresh was turned off", m-n)
	}
}

func TestJitter(t *testing.T) {
	for range 1000 {
		if d := jitter(time.Minute); d < 54*time.Second || d > 66*time.Second {
			t.Fatalf("jitter(1m) = %v, outside ±10 %%", d)
		}
	}
}

func TestAnnouncerHealthy(t *testing.T) {
	fn := &fakeNet{fail: map[string]error{"eth1": errors.New("socket: operation not permitted")}}
	a := New(t.Context(), Options{Schedule: []time.Duration{0}, Dial: fn.dial})
	t.Cleanup(func() { a.Close() })
	ifis := []net.Interface{testIface("eth0", 1), testIface("eth1", 2)}
	if err := a.SetInterfaces(ifis); err == nil {
		t.Fatal("SetInterfaces hid eth1's dial error")
	}
	if err := a.Healthy(); err == nil || !strings.Contains(err.Error(), "no ARP/NDP sockets on eth1") || strings.Contains(err.Error(), "eth0") {
		t.Fatalf("Healthy() = %v, want eth1 (only) without sockets", err)
	}

	// eth1 can be opened now: the same SetInterfaces opens it.
	fn.mu.Lock()
	fn.fail = nil
	fn.mu.Unlock()
	if err := a.SetInterfaces(ifis); err != nil {
		t.Fatal(err)
	}
	if err := a.Healthy(); err != nil {
		t.Fatalf("Healthy() = %v after reopening", err)
	}
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil}); err != nil {
		t.Fatal(err)
	}

	// A socket closed underneath eth0: not healthy, and reopened by the
	// next SetInterfaces, after which eth0 answers again.
	old := fn.iface("eth0")
	old.arp.Close()
	waitFor(t, "eth0 reported broken", func() bool {
		err := a.Healthy()
		return err != nil && strings.Contains(err.Error(), "closed underneath on eth0")
	})
	dials := fn.dials
	if err := a.SetInterfaces(ifis); err != nil {
		t.Fatal(err)
	}
	if err := a.Healthy(); err != nil {
		t.Fatalf("Healthy() = %v after reopening eth0", err)
	}
	if fn.dials != dials+1 {
		t.Errorf("%d dials to reopen, want 1 (eth0 only)", fn.dials-dials)
	}
	eth0 := fn.iface("eth0")
	if eth0 == old {
		t.Fatal("eth0 was not dialed again")
	}
	eth0.arp.in <- arpRequest(peerMAC, peerIP, vip4)
	waitFor(t, "a reply on the reopened eth0", func() bool {
		for _, f := range eth0.arp.sent() {
			if s := summarizeARP(f); s != nil && s.Op == arp.OperationReply {
				return true
			}
		}
		return false
	})
}

// TestAnnouncerRecover: a responder that runs but hears nothing is
// reopened by Recover, which announces again through the new sockets; a
// second request within RecoverEvery only re-announces; an address not
// owned changes nothing.
func TestAnnouncerRecover(t *testing.T) {
	a, fn := newTestAnnouncer(t, []time.Duration{0}, "eth0")
	if err := a.SetOwned(map[netip.Addr][]string{vip4: nil}); err != nil {
		t.Fatal(err)
	}
	eth0 := fn.iface("eth0")
	waitFor(t, "eth0's announcement", func() bool { return len(eth0.arp.sent()) == 2 })
	a.mu.Lock()
	a.responders["eth0"].deaf.Store(true)
	a.mu.Unlock()

	if err := a.Recover(netip.MustParseAddr("198.51.100.250")); err != nil {
		t.Fatal(err)
	}
	if fn.iface("eth0") != eth0 || eth0.arp.isClosed() {
		t.Fatal("Recover of an address not owned reopened eth0")
	}
	if err := a.Recover(vip4); err != nil {
		t.Fatal(err)
	}
	if !eth0.arp.isClosed() {
		t.Fatal("the deaf responder's sockets are still open after Recover")
	}
	fresh := fn.iface("eth0")
	if fresh == eth0 {
		t.Fatal("eth0 was not reopened")
	}
	waitFor(t, "the reopened eth0's announcement", func() bool { return len(fresh.arp.sent()) == 2 })
	a.mu.Lock()
	deaf := a.responders["eth0"].deaf.Load()
	a.mu.Unlock()
	if deaf {
		t.Error("the reopened responder is still deaf")
	}
	if err := a.Healthy(); err != nil {
		t.Errorf("Healthy after Recover: %v", err)
	}
	// Again at once: no second reopen, one more announcement round.
	if err := a.Recover(vip4); err != nil {
		t.Fatal(err)
	}
	if fn.iface("eth0") != fresh {
		t.Error("eth0 reopened twice within RecoverEvery")
	}
	waitFor(t, "the re-announcement", func() bool { return len(fresh.arp.sent()) >= 3 })
}
