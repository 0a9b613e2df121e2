package speaker

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/api/service"
	"github.com/ironlb/ironlb/speaker/election"
)

// Prober is what an Announcer offers to check that nobody on the LAN uses
// an address before this node announces it for the first time (RFC 5227
// ARP probes, IPv6 duplicate address detection); the layer-2 Announcer
// has it. It returns the MACs that answered for ip on the interfaces
// ifaces allows (nil: all), this node's own left out. Without it, the
// speaker announces new addresses at once.
type Prober interface {
	Probe(ctx context.Context, ip netip.Addr, ifaces []string) ([]net.HardwareAddr, error)
}

// Re-probing an address in conflict: after conflictBackoffMin, doubling
// up to conflictBackoffMax, ±20 %. A host that keeps the address keeps
// costing it at most three broadcast probes every 30 s; one that drops it
// gets the address announced within about the current backoff plus the
// probe's 0.7 s.
const (
	conflictBackoffMin = time.Second
	conflictBackoffMax = 30 * time.Second
)

// conflictBackoff is the wait before re-probe number n (0 for the first).
func conflictBackoff(n int) time.Duration {
	d := conflictBackoffMax
	if n < 5 { // 1 s << 5 is past the cap already
		d = min(conflictBackoffMin<<n, conflictBackoffMax)
	}
	return d - d/5 + rand.N(2*d/5+1)
}

// probeGuard holds back the first announcement of new addresses until a
// probe has found them free. The sync loop asks it per address (gate) and
// tells it at the end of each sync which addresses are assigned (synced);
// the probes run on goroutines of their own, so a probe never delays the
// sync loop, and a failover never waits for one: only addresses this node
// neither announced before nor took over from another speaker are probed.
//
// Concurrency: gate, synced and holding are called by the sync loop only;
// conflicts may be called from anywhere. The probe goroutines report back
// under mu and kick the sync loop.
type probeGuard struct {
	prober Prober
	// foreign reports whether a MAC that answered a probe is a conflict:
	// answers from speakers (this node's included) are not, since a
	// speaker answering is one that still announces the address, which
	// the election settles.
	foreign func(net.HardwareAddr) bool
	kick    func()
	// report raises the Event for a new conflict; called without mu.
	report  func(ctx context.Context, ip netip.Addr, mac net.HardwareAddr)
	metrics *Metrics
	backoff func(n int) time.Duration

	mu      sync.Mutex
	primed  bool // a sync has completed
	known   map[netip.Addr]bool
	probing map[netip.Addr]*probing
	asked   map[netip.Addr]bool // gated in the current sync
}

// probing is one address held back for a probe.
type probing struct {
	cancel context.CancelFunc
	clear  bool             // the last probe found the address free
	mac    net.HardwareAddr // the host answering, while in conflict
	// reported lists the MACs already named in an Event during this
	// conflict: one Event per distinct conflict, not per probe.
	reported []string
	started  time.Time
}

func newProbeGuard(p Prober, foreign func(net.HardwareAddr) bool, kick func(), report func(context.Context, netip.Addr, net.HardwareAddr), m *Metrics) *probeGuard {
	return &probeGuard{
		prober: p, foreign: foreign, kick: kick, report: report, metrics: m, backoff: conflictBackoff,
		known: map[netip.Addr]bool{}, probing: map[netip.Addr]*probing{}, asked: map[netip.Addr]bool{},
	}
}

// gate reports whether this node, the elected owner of ip, may announce it
// now. takeover is true when the owner on record before was another
// speaker (a failover or a handover: announced already, and waiting
// would only cost a failover its speed). Every address assigned when the
// speaker started counts as announced before: after a restart this node
// may be taking back what it served before, and a probe would leave it
// dark for 0.7 s.
//
// conflicted is true when the Services' status says ip was held back for
// a conflict (heldForConflict): probed even on the first sync.
func (g *probeGuard) gate(ctx context.Context, ip netip.Addr, ifaces []string, takeover, conflicted bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.asked[ip] = true
	p := g.probing[ip]
	switch {
	case g.known[ip] || takeover || (!g.primed && !conflicted):
		if p != nil {
			// Taken over meanwhile: whoever announced it has it.
			p.cancel()
			delete(g.probing, ip)
			g.gauge()
		}
		g.known[ip] = true
		return true
	case p == nil:
		pctx, cancel := context.WithCancel(ctx)
		p = &probing{cancel: cancel, started: time.Now()}
		g.probing[ip] = p
		go g.run(pctx, ip, slices.Clone(ifaces), p)
		return false
	case p.clear:
		delete(g.probing, ip)
		g.known[ip] = true
		klog.FromContext(ctx).V(1).Info("Probe found the address free", "ip", ip, "after", time.Since(p.started).Round(time.Millisecond))
		return true
	}
	return false
}

// holding reports whether ip is held back for a probe or a conflict.
func (g *probeGuard) holding(ip netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.probing[ip]
	return ok
}

// synced ends a sync: probes of addresses this node no longer wants to
// announce (gone, elected elsewhere, isolated) stop, and addresses no
// longer assigned are forgotten, so that one assigned again later, to
// another Service, is probed again.
//
// On the first sync, every assigned address counts as announced before,
// except those in conflicted: held back for a conflict before this
// speaker (re)started, as the Services' status says.
func (g *probeGuard) synced(assigned []election.Address, conflicted map[netip.Addr]bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := make(map[netip.Addr]bool, len(assigned))
	for _, a := range assigned {
		now[a.IP] = true
		if !g.primed && !conflicted[a.IP] {
			g.known[a.IP] = true
		}
	}
	g.primed = true
	for ip := range g.known {
		if !now[ip] {
			delete(g.known, ip)
		}
	}
	for ip, p := range g.probing {
		if !g.asked[ip] {
			p.cancel()
			delete(g.probing, ip)
		}
	}
	clear(g.asked)
	g.gauge()
}

// conflicts returns the addresses held back because a host answered their
// probe, with its MAC.
func (g *probeGuard) conflicts() map[netip.Addr]net.HardwareAddr {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[netip.Addr]net.HardwareAddr{}
	for ip, p := range g.probing {
		if p.mac != nil {
			out[ip] = slices.Clone(p.mac)
		}
	}
	return out
}

// gauge publishes how many addresses are held back for a conflict; with
// mu held.
func (g *probeGuard) gauge() {
	n := 0
	for _, p := range g.probing {
		if p.mac != nil {
			n++
		}
	}
	g.metrics.heldBack.Set(float64(n))
}

// run probes ip until it is free or ctx ends (the address is no longer
// to be announced here), backing off while another host answers.
func (g *probeGuard) run(ctx context.Context, ip netip.Addr, ifaces []string, p *probing) {
	logger := klog.FromContext(ctx)
	for n := 0; ; n++ {
		start := time.Now()
		macs, err := g.prober.Probe(ctx, ip, ifaces)
		if ctx.Err() != nil {
			return
		}
		g.metrics.probes.Observe(time.Since(start).Seconds())
		var other net.HardwareAddr
		for _, m := range macs {
			if g.foreign(m) {
				other = m
				break
			}
		}
		if err != nil {
			// Without a probe there is no evidence of a conflict; an
			// address held back for good would be worse than the
			// announcement this node would have made before probing
			// existed.
			logger.Error(err, "Probing a new address failed; announcing it without the probe", "ip", ip)
		}
		g.mu.Lock()
		if g.probing[ip] != p {
			g.mu.Unlock()
			return
		}
		if other == nil {
			was := p.mac
			p.clear, p.mac = true, nil
			g.gauge()
			g.mu.Unlock()
			if was != nil {
				logger.Info("The address is free again; announcing it", "ip", ip, "was", was.String(), "heldFor", time.Since(p.started).Round(time.Millisecond))
			}
			g.kick()
			return
		}
		first := p.mac == nil
		p.mac = slices.Clone(other)
		fresh := !slices.Contains(p.reported, other.String())
		if fresh {
			p.reported = append(p.reported, other.String())
		}
		g.gauge()
		g.mu.Unlock()
		if fresh {
			g.metrics.addressConflicts.WithLabelValues(ip.String()).Inc()
			g.report(ctx, ip, other)
		}
		if first {
			g.kick() // so that Conflicts() readers see it
		}
		wait := g.backoff(n)
		logger.V(1).Info("Address in use on the LAN; probing again later", "ip", ip, "mac", other.String(), "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait): // collected once fired (Go 1.23+)
		}
	}
}

// probeGate is the sync loop's question for ip, which this node is
// elected to announce: may it announce it now? Always yes without a
// Prober.
func (s *Speaker) probeGate(ctx context.Context, ip netip.Addr, ifaces []string, svcs []*corev1.Service) bool {
	if s.probes == nil {
		return true
	}
	prev, had := s.owners[ip]
	conflicted := !s.probes.isPrimed() && slices.ContainsFunc(svcs, func(svc *corev1.Service) bool { return heldForConflict(svc, ip) })
	return s.probes.gate(ctx, ip, ifaces, had && prev != "" && prev != s.opts.NodeName, conflicted)
}

// probeHolding reports whether ip waits for a probe (the sync loop then
// keeps the previous owner on record, as for a handover that waits).
func (s *Speaker) probeHolding(ip netip.Addr) bool {
	return s.probes != nil && s.probes.holding(ip)
}

// probesSynced ends a sync for the probes (see probeGuard.synced).
func (s *Speaker) probesSynced(assigned []election.Address, users map[netip.Addr][]*corev1.Service) {
	if s.probes == nil {
		return
	}
	var conflicted map[netip.Addr]bool
	if !s.probes.isPrimed() {
		conflicted = map[netip.Addr]bool{}
		for ip, svcs := range users {
			if slices.ContainsFunc(svcs, func(svc *corev1.Service) bool { return heldForConflict(svc, ip) }) {
				conflicted[ip] = true
			}
		}
	}
	s.probes.synced(assigned, conflicted)
}

// heldForConflict reports whether svc's ironlb.io/Announced condition says
// ip was held back for an address conflict: False with reason
// AddressConflict, and a message naming ip (or none of the Service's
// addresses, when it cannot tell which). A restarted speaker probes such
// an address again instead of announcing it as one served before.
func heldForConflict(svc *corev1.Service, ip netip.Addr) bool {
	for _, c := range svc.Status.Conditions {
		if c.Type != api.ConditionAnnounced || c.Status != metav1.ConditionFalse || c.Reason != api.ReasonAddressConflict {
			continue
		}
		if strings.Contains(c.Message, ip.String()) {
			return true
		}
		return !slices.ContainsFunc(service.IngressIPs(svc), func(a netip.Addr) bool { return strings.Contains(c.Message, a.String()) })
	}
	return false
}

func (g *probeGuard) isPrimed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.primed
}

// Conflicts returns the addresses this node is elected to announce but
// holds back because another host on the LAN answered their probe, with
// that host's MAC (the latest one, when several did). It is empty when
// the announcer cannot probe. Safe for concurrent use; the sync loop is
// kicked whenever an address enters or leaves it.
func (s *Speaker) Conflicts() map[netip.Addr]net.HardwareAddr {
	if s.probes == nil {
		return map[netip.Addr]net.HardwareAddr{}
	}
	return s.probes.conflicts()
}

// reportConflict raises a Warning Event on every Service using ip, naming
// the MAC that answered the probe.
func (s *Speaker) reportConflict(ctx context.Context, ip netip.Addr, mac net.HardwareAddr) {
	svcs := s.servicesUsing(ip)
	klog.FromContext(ctx).Info("Address already in use on the LAN; not announcing it", "ip", ip, "mac", mac.String(), "services", len(svcs))
	for _, svc := range svcs {
		s.recorder.Eventf(svc, corev1.EventTypeWarning, api.EventAddressConflict,
			"address %s is already in use on the LAN by MAC %s, which answered node %q's probe; ironlb does not announce it until that host releases it (probing again every 1-30 s)",
			ip, mac, s.opts.NodeName)
	}
}

// foreignMAC reports whether mac belongs to no ironlb speaker.
func (s *Speaker) foreignMAC(mac net.HardwareAddr) bool {
	return s.opts.MACOwner == nil || s.opts.MACOwner(mac) == ""
}
