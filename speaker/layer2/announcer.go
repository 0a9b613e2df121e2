package layer2

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
)

// ErrClosed is returned by Announcer methods after Close or after the
// context given to New has ended.
var ErrClosed = errors.New("layer2: announcer closed")

// DefaultSchedule returns the offsets, from the moment an address is gained,
// at which the gratuitous announcements are sent: 0, 100, 300, 700, 1500 and
// 3000 ms. The early rounds move neighbours quickly; the late ones still
// win if a neighbour re-learned the old owner from a last in-flight reply, or
// if a switch only started forwarding after the link came up.
func DefaultSchedule() []time.Duration {
	return []time.Duration{
		0,
		100 * time.Millisecond,
		300 * time.Millisecond,
		700 * time.Millisecond,
		1500 * time.Millisecond,
		3000 * time.Millisecond,
	}
}

// DefaultRefresh is how often an owned address is announced again after
// its initial burst, give or take 10 %. Switches forget a MAC's port after
// their ageing time (300 s by default on most) while clients keep their
// ARP entries much longer; without traffic from this node in between, a
// switch would flood or, worse, black-hole frames for the address. A
// minute stays well inside common ageing times.
const DefaultRefresh = time.Minute

// Options configure an Announcer. The zero value is ready for production.
type Options struct {
	// Refresh is how often each owned address is announced again once its
	// initial burst is over (each address on its own jittered clock, sent
	// in at most one batch per second per interface). Zero means
	// DefaultRefresh; negative turns refreshing off.
	Refresh time.Duration

	// Schedule lists the offsets after gaining an address at which
	// gratuitous ARP / unsolicited NA rounds are sent. Nil means
	// DefaultSchedule(); an empty, non-nil slice sends none. Negative
	// offsets count as 0; the order does not matter.
	Schedule []time.Duration

	// Dial opens the connections for one interface. Nil means Dial, which
	// opens raw sockets; tests pass in-memory connections, and callers that
	// work across network namespaces wrap Dial to open the sockets in the
	// right one.
	Dial func(ifi *net.Interface) (Conns, error)

	// DefendInterval is the shortest time between two defences of one
	// address on one interface when another host claims it (see
	// DefaultDefendInterval, the value used when it is zero or negative).
	DefendInterval time.Duration

	// OnConflict, when set, is called for every claim another host makes
	// on an address announced here (see Conflict), whether or not the
	// rate limit let a defence go out for it. It runs on the interface's
	// defence goroutine: calls for one interface are never concurrent,
	// calls for different interfaces may be, and it must not block, or the
	// defence of that interface waits for it. Claims arriving faster than
	// they are handled are dropped (and still counted in Stats).
	OnConflict func(Conflict)

	// Peer, when set, reports whether a MAC belongs to another speaker.
	// Claims by peers are reported but not defended: a peer announcing an
	// address is usually taking it over a moment before this node learns
	// it lost it, and fighting back would flap the LAN; whether to answer
	// is the election's call (see Reannounce). It is called from the
	// defence goroutines and must not block.
	Peer func(mac net.HardwareAddr) bool

	// CheckTimeout is how long Check waits for answers; zero or negative
	// means DefaultCheckTimeout.
	CheckTimeout time.Duration

	// ProbeRate bounds the question frames (Check and Probe) sent per
	// second on each interface, with bursts of as many; zero or negative
	// means DefaultProbeRate.
	ProbeRate int

	// InterfaceAddrs lists the addresses of an interface, for the sender
	// address of Check's questions. Nil reads them in the calling
	// thread's network namespace; callers that work across namespaces
	// wrap it, as they wrap Dial.
	InterfaceAddrs func(ifi *net.Interface) ([]netip.Addr, error)
}

// Announcer runs one responder per managed interface and decides which
// addresses each of them answers for.
//
// Concurrency: all methods are safe for concurrent use. SetInterfaces,
// SetOwned and Close are serialized by an internal mutex, so each call sees
// the complete effect of the one before; Stats never blocks on them. The
// packet path does not take that mutex: a responder reads its owned set
// through an atomic pointer to an immutable map, so a slow SetOwned never
// delays a reply.
type Announcer struct {
	log      logr.Logger
	dial     func(*net.Interface) (Conns, error)
	schedule []time.Duration
	refresh  time.Duration // <= 0: off
	defence  defence
	stats    counters

	checkTimeout time.Duration
	probeRate    int
	ifaceAddrs   func(*net.Interface) ([]netip.Addr, error)

	ctx    context.Context
	cancel context.CancelFunc

	// macs holds the MACs of the managed interfaces, for defence.siblings.
	macs atomic.Pointer[map[[macLen]byte]struct{}]
	// drains are the addresses handed over to another speaker
	// (SetDraining), shared with the responders.
	drains *drainTable

	mu         sync.Mutex
	closed     bool
	responders map[string]*responder // by interface name
	want       []string              // the names last passed to SetInterfaces
	ifis       []net.Interface       // and the interfaces, for Recover
	// recovered is when Recover last reopened each interface.
	recovered map[string]time.Time
	// refreshFor is the last SetRefresh, given to new responders too.
	refreshFor map[netip.Addr]time.Duration
	owned      map[netip.Addr][]string
	watched    addrSet
	// limiters bound the questions (Check, Probe) per interface; kept
	// across reopened responders, so that reopening never resets a bound.
	limiters map[string]*rate.Limiter
}

// New returns an Announcer with no interfaces and no owned addresses. Its
// goroutines run under ctx: when ctx ends, every responder stops and closes
// its sockets, as with Close (which additionally waits for that). The logger
// is taken from ctx (logr.FromContextOrDiscard, which is where
// klog.NewContext puts it).
func New(ctx context.Context, opts Options) *Announcer {
	schedule := DefaultSchedule()
	if opts.Schedule != nil {
		schedule = make([]time.Duration, len(opts.Schedule))
		for i, d := range opts.Schedule {
			schedule[i] = max(d, 0)
		}
		slices.Sort(schedule)
	}
	dial := opts.Dial
	if dial == nil {
		dial = Dial
	}
	def := defence{interval: opts.DefendInterval, onConflict: opts.OnConflict, peer: opts.Peer}
	if def.interval <= 0 {
		def.interval = DefaultDefendInterval
	}
	refresh := opts.Refresh
	if refresh == 0 {
		refresh = DefaultRefresh
	}
	ctx, cancel := context.WithCancel(ctx)
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = DefaultCheckTimeout
	}
	if opts.ProbeRate <= 0 {
		opts.ProbeRate = DefaultProbeRate
	}
	if opts.InterfaceAddrs == nil {
		opts.InterfaceAddrs = interfaceAddrs
	}
	a := &Announcer{
		log:        logr.FromContextOrDiscard(ctx).WithName("layer2"),
		dial:       dial,
		schedule:   schedule,
		refresh:    refresh,
		ctx:        ctx,
		cancel:     cancel,
		responders: map[string]*responder{},
		owned:      map[netip.Addr][]string{},
	}
	a.checkTimeout, a.probeRate, a.ifaceAddrs = opts.CheckTimeout, opts.ProbeRate, opts.InterfaceAddrs
	a.limiters = map[string]*rate.Limiter{}
	def.siblings = &a.macs
	a.defence = def
	a.drains = newDrainTable()
	return a
}

// SetInterfaces makes ifis the set of managed interfaces: a responder is
// started for each new interface (and announces every owned address allowed
// on it, as if just gained), and the responders of interfaces no longer
// listed are stopped, their sockets closed before SetInterfaces returns. An
// interface whose index or MAC changed is reopened. Interfaces that fail to
// open are reported in the joined error and left out; the others still
// change.
//
// The speaker calls it with the result of Interfaces, filtered by
// HasCarrier, whenever links change: dropping an interface whose link went
// down, and re-adding it when carrier returns so that it announces again.
func (a *Announcer) SetInterfaces(ifis []net.Interface) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.ctx.Err() != nil {
		return ErrClosed
	}

	want := make(map[string]net.Interface, len(ifis))
	macs := make(map[[macLen]byte]struct{}, len(ifis))
	for _, ifi := range ifis {
		want[ifi.Name] = ifi
		if len(ifi.HardwareAddr) == macLen {
			macs[[macLen]byte(ifi.HardwareAddr)] = struct{}{}
		}
	}
	// Published before any responder starts, so that none takes a new
	// sibling's first announcements for a foreign claim.
	a.macs.Store(&macs)
	a.want = a.want[:0]
	a.ifis = a.ifis[:0]
	for _, ifi := range ifis {
		a.want = append(a.want, ifi.Name)
		ifi.HardwareAddr = slices.Clone(ifi.HardwareAddr)
		a.ifis = append(a.ifis, ifi)
	}
	for name, r := range a.responders {
		w, ok := want[name]
		if ok && w.Index == r.ifi.Index && sameMAC(w.HardwareAddr, r.ifi.HardwareAddr) && !r.broken.Load() {
			continue
		}
		r.stop()
		delete(a.responders, name)
		a.log.Info("Stopped responder", "interface", name)
	}

	var errs []error
	for _, ifi := range ifis {
		if _, ok := a.responders[ifi.Name]; ok {
			continue
		}
		if len(ifi.HardwareAddr) != macLen {
			errs = append(errs, fmt.Errorf("layer2: interface %s has no Ethernet MAC address (%q)", ifi.Name, ifi.HardwareAddr))
			continue
		}
		// Own a copy: the caller's net.Interface shares its MAC slice.
		ifi.HardwareAddr = slices.Clone(ifi.HardwareAddr)
		conns, err := a.dial(&ifi)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r := newResponder(a.ctx, ifi, conns, a.log, &a.stats, a.schedule, a.defence)
		r.refresh = a.refresh
		if a.refreshFor != nil {
			m := a.refreshFor
			r.refreshFor.Store(&m)
		}
		if a.limiters[ifi.Name] == nil {
			a.limiters[ifi.Name] = newLimiter(a.probeRate)
		}
		r.limiter = a.limiters[ifi.Name]
		r.drains = a.drains
		if a.watched != nil {
			w := a.watched
			r.watched.Store(&w)
		}
		r.start()
		a.responders[ifi.Name] = r
		// Listed before its first update: a drain heard in between
		// silences it too (drain.go).
		a.publishResponders()
		a.log.Info("Started responder", "interface", ifi.Name, "mac", ifi.HardwareAddr.String(),
			"arp", conns.ARP != nil, "ndp", conns.NDP != nil)
		if err := r.update(setFor(a.owned, ifi.Name)); err != nil {
			errs = append(errs, err)
		}
	}
	a.publishResponders()
	return errors.Join(errs...)
}

// publishResponders tells the read loops which responders to silence
// when one of them hears a new owner (drain.go). With a.mu held.
func (a *Announcer) publishResponders() {
	rs := make([]*responder, 0, len(a.responders))
	for _, r := range a.responders {
		rs = append(rs, r)
	}
	a.drains.responders.Store(&rs)
}

// SetRefresh sets per-address refresh intervals that replace
// Options.Refresh for those addresses (a pool's refresh-interval); zero or
// negative turns refreshing off for an address. Addresses not in the map
// keep the default. The map is copied.
func (a *Announcer) SetRefresh(intervals map[netip.Addr]time.Duration) {
	m := maps.Clone(intervals)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refreshFor = m
	for _, r := range a.responders {
		r.refreshFor.Store(&m)
		select {
		case r.ownedChanged <- struct{}{}:
		default:
		}
	}
}

// RecoverEvery bounds how often Recover reopens one interface: a node
// asked about many addresses at once reopens each interface once, and
// re-announces the rest.
const RecoverEvery = 5 * time.Second

// Recover acts on another speaker's report that nobody answers for ip,
// which this node owns: it reopens the responders ip is announced
// through (at most once per RecoverEvery per interface; a reopened
// responder announces every owned address, as at start) and re-announces
// ip. A responder can look healthy and still not answer (a socket that
// stopped delivering frames); reopening it is the one remedy that needs
// no restart. Nothing happens for an address this node does not own.
func (a *Announcer) Recover(ip netip.Addr) error {
	a.mu.Lock()
	ifaces, owned := a.owned[ip]
	if !owned || a.closed {
		a.mu.Unlock()
		return nil
	}
	if a.recovered == nil {
		a.recovered = map[string]time.Time{}
	}
	now := time.Now()
	reopen := false
	for name, r := range a.responders {
		if len(ifaces) > 0 && !slices.Contains(ifaces, name) {
			continue
		}
		if now.Sub(a.recovered[name]) < RecoverEvery {
			continue
		}
		a.recovered[name] = now
		r.broken.Store(true) // SetInterfaces reopens broken responders
		reopen = true
	}
	ifis := slices.Clone(a.ifis)
	a.mu.Unlock()
	if reopen {
		a.log.Info("Reopening responders after another speaker found an address unanswered", "ip", ip)
		return a.SetInterfaces(ifis)
	}
	a.Reannounce(ip)
	return nil
}

// Interfaces returns the interfaces that have a responder, by name: where
// this node answers for its addresses.
func (a *Announcer) Interfaces() []net.Interface {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]net.Interface, 0, len(a.responders))
	for _, r := range a.responders {
		ifi := r.ifi
		ifi.HardwareAddr = slices.Clone(ifi.HardwareAddr)
		out = append(out, ifi)
	}
	slices.SortFunc(out, func(x, y net.Interface) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// Healthy reports, as an error naming them, the interfaces given to the
// last SetInterfaces that have no working responder: their sockets could
// not be opened, or one stopped working underneath. Calling SetInterfaces
// again (with the same interfaces) opens them anew.
func (a *Announcer) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var missing, broken []string
	for _, name := range a.want {
		r, ok := a.responders[name]
		switch {
		case !ok:
			missing = append(missing, name)
		case r.broken.Load():
			broken = append(broken, name)
		}
	}
	var errs []error
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("layer2: no ARP/NDP sockets on %s", strings.Join(missing, ", ")))
	}
	if len(broken) > 0 {
		errs = append(errs, fmt.Errorf("layer2: ARP/NDP socket closed underneath on %s", strings.Join(broken, ", ")))
	}
	return errors.Join(errs...)
}

// SetOwned replaces the set of addresses this node answers for. Each key is
// an owned address; its value lists the interfaces it may be announced on,
// nil meaning every managed interface (an empty, non-nil list means none).
// IPv4-mapped IPv6 addresses count as IPv4; zones are dropped; invalid,
// unspecified, loopback and multicast addresses are skipped with a log
// line, since no neighbour could ever ask for them.
//
// When SetOwned returns, responders answer for the new set only (less the
// draining addresses whose new owner was heard, see SetDraining): a lost
// address is no longer answered (apart from a reply a read loop had already
// decided on) and its pending announcements are cancelled; a gained address
// is answered and its announcement burst has started. Errors (joining a
// multicast group) are returned joined, but the new set is in force anyway:
// such an address is still answered for unicast solicitations and announced.
//
// SetOwned does not keep owned; the caller may reuse it.
func (a *Announcer) SetOwned(owned map[netip.Addr][]string) error {
	norm := make(map[netip.Addr][]string, len(owned))
	for ip, ifaces := range owned {
		ip = ip.Unmap().WithZone("")
		if !ip.IsValid() || ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() {
			a.log.Info("Ignoring address that cannot be announced", "ip", ip)
			continue
		}
		norm[ip] = slices.Clone(ifaces) // keeps nil as nil
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.ctx.Err() != nil {
		return ErrClosed
	}
	a.owned = norm
	var errs []error
	for name, r := range a.responders {
		if err := r.update(setFor(norm, name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SetWatched makes the responders report claims on the given addresses
// through OnConflict although they are not announced here, replacing the
// previous set: a speaker that stepped back from an address for another
// speaker uses it to hear that one still announces it. Watched addresses
// are never answered nor defended (Conflict.Defended is false). An owned
// address needs no watching.
func (a *Announcer) SetWatched(ips []netip.Addr) {
	set := make(addrSet, len(ips))
	for _, ip := range ips {
		set[ip.Unmap().WithZone("")] = struct{}{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.watched = set
	for _, r := range a.responders {
		r.watched.Store(&set)
	}
}

// Reannounce sends one announcement round for ip at once on every
// interface that announces it (nothing where it is not owned), counted as
// defences. A speaker in a split brain uses it to keep reminding the other
// speaker, which has stepped back, that the address is served.
func (a *Announcer) Reannounce(ip netip.Addr) {
	ip = ip.Unmap().WithZone("")
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.responders {
		r.defend(ip)
	}
}

// setFor picks the addresses allowed on one interface.
func setFor(owned map[netip.Addr][]string, iface string) addrSet {
	s := make(addrSet, len(owned))
	for ip, allow := range owned {
		if allow == nil || slices.Contains(allow, iface) {
			s[ip] = struct{}{}
		}
	}
	return s
}

// Stats returns a snapshot of the counters. Each counter is read atomically,
// but not all of them at one instant.
func (a *Announcer) Stats() Stats {
	return Stats{ARP: a.stats.arp.snapshot(), NDP: a.stats.ndp.snapshot()}
}

// Close stops every responder and waits until their goroutines have ended
// and their sockets are closed. It is idempotent; later calls to
// SetInterfaces and SetOwned return ErrClosed.
func (a *Announcer) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	a.cancel()
	for name, r := range a.responders {
		r.stop()
		delete(a.responders, name)
	}
	a.publishResponders()
	return nil
}
