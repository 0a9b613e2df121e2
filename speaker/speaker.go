// Package speaker decides which addresses this node announces. It watches
// Services, EndpointSlices, Nodes and the address-pool ConfigMap, combines
// them with the live speaker members, elects an owner per address and
// hands this node's share to the layer-2 announcer.
//
// Failover needs no API call: a membership change recomputes owners from
// the informer caches, which keep serving while the API server is away.
package speaker

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	evrec "github.com/ironlb/ironlb/api/recorder"
	"github.com/ironlb/ironlb/api/service"
	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/speaker/election"
)

// Announcer answers ARP/NDP for the addresses it is given.
type Announcer interface {
	// SetOwned replaces the set of owned addresses. Each maps to the
	// interfaces it may be announced on; nil means every interface.
	SetOwned(owned map[netip.Addr][]string)
}

// refresher is what an Announcer offers for pools with their own
// refresh-interval; the layer-2 Announcer has it.
type refresher interface {
	// SetRefresh sets per-address refresh intervals; zero is off.
	SetRefresh(intervals map[netip.Addr]time.Duration)
}

// Options configure a Speaker.
type Options struct {
	NodeName              string
	Namespace, ConfigName string
	LBClass               string
	Metrics               *Metrics
	// LocalServing reports whether this node's service proxy already
	// forwards to a local endpoint of svc (an externalTrafficPolicy: Local
	// Service), and false only when it positively does not yet: kube-proxy
	// programs a new endpoint up to a second after the EndpointSlice says
	// it is ready. Nil means always. It is asked only when this node takes
	// an address over from a speaker that is still alive, which keeps
	// forwarding meanwhile (make-before-break); never on failover.
	LocalServing func(ctx context.Context, svc *corev1.Service) bool
	// LocalServingWait bounds how long a handover waits for LocalServing
	// (default 5 s): a proxy that never says yes must not keep an address
	// dark for good.
	LocalServingWait time.Duration
	// MACOwner returns the node whose speaker published mac (memberlist
	// metadata, membership.Directory.NodeOf), or "" when none did. It
	// tells another speaker from a foreign host in DuplicateAnnouncer.
	// Nil means every claimant counts as foreign.
	MACOwner func(mac net.HardwareAddr) string
	// MACsOf returns the MACs the speaker on node published (memberlist
	// metadata, membership.Directory.MACsOf), so that the announcer can
	// end a drain on the packet path the moment it hears the new owner
	// (handover.go). Nil leaves the end of a drain to the next sync after
	// DuplicateAnnouncer heard the new owner.
	MACsOf func(node string) []net.HardwareAddr
	// Interfaces returns the interfaces this node announces on, for the
	// ironlb.io/Announced condition (their names and MACs). Nil leaves
	// them out of it.
	Interfaces func() []net.Interface

	// Check asks the LAN who answers for ip, on one of ifaces (nil: any
	// interface this node answers on), and returns the MACs that did,
	// this node's left out (layer2.Announcer.Check). Nil turns the
	// self-checks (selfcheck.go) off.
	Check func(ctx context.Context, ip netip.Addr, ifaces []string) ([]net.HardwareAddr, error)
	// CheckInterval is how often a sample of other nodes' addresses is
	// checked (default DefaultCheckInterval, jittered ±20 %); negative
	// turns the checks off.
	CheckInterval time.Duration
	// CheckSample is how many addresses a round checks at most (default
	// DefaultCheckSample).
	CheckSample int
	// AskOwner sends msg to the speaker on node (membership.Member.Send),
	// to have it re-announce an address a check found unanswered.
	AskOwner func(node string, msg []byte) error
}

// Speaker elects owners and drives the announcer.
//
// Informer handlers and membership callbacks only signal the sync loop;
// the loop is the only goroutine that computes owners and calls the
// announcer, so they never race.
type Speaker struct {
	opts      Options
	client    kubernetes.Interface
	announcer Announcer
	metrics   *Metrics
	recorder  *evrec.Recorder

	factory   informers.SharedInformerFactory
	cmFactory informers.SharedInformerFactory
	services  corelisters.ServiceLister
	slices    discoverylisters.EndpointSliceLister
	nodes     corelisters.NodeLister
	configs   corelisters.ConfigMapLister
	synced    []cache.InformerSynced

	kick chan struct{}

	// elector remembers the last election so a membership change costs a
	// few milliseconds instead of a full re-election; only the sync loop
	// uses it.
	elector election.Elector

	mu       sync.Mutex
	members  []string
	isolated bool // link down or not yet merged back: announce nothing
	changed  time.Time
	// back is when this node last came back: the end of an isolation,
	// or its first membership view with itself in it (a start, a
	// restart). A drain towards it may be under way then (handover.go,
	// returnHandover).
	back  time.Time
	cfg   *config.Config
	cfgRV string
	// yields holds addresses this node keeps silent after losing a split
	// brain to another speaker, until when (DuplicateAnnouncer).
	yields map[netip.Addr]time.Time
	// splits holds the split brains this node won, by address.
	splits map[netip.Addr]split
	// drains and handovers are the two sides of handovers in progress
	// (handover.go).
	drains    map[netip.Addr]drain
	handovers map[netip.Addr]handover
	// peerClaims: the last claim by another speaker per announced
	// address (handover.go); nil until the first.
	peerClaims map[netip.Addr]peerClaim
	// foreign holds the last claim by a host that is not a speaker on an
	// address this node announces, for the condition.
	foreign map[netip.Addr]foreignClaim

	conds *condWriter
	// users is the last sync's Services by address (never modified once
	// stored), for servicesUsing.
	users atomic.Pointer[map[netip.Addr][]*corev1.Service]

	// announcing is what the announcer was last given; checkable the
	// elected owners, since when, for the self-checks; requested when
	// another speaker last asked this one to re-announce an address.
	announcing map[netip.Addr][]string
	checkable  map[netip.Addr]checkState
	requested  map[netip.Addr]time.Time

	dupMu       sync.Mutex
	dupReported map[dupKey]time.Time // last report per address and claimant

	// Owned by the sync loop.
	owners  map[netip.Addr]string
	waiting map[netip.Addr]time.Time // handovers held back for LocalServing, since when
	retry   *time.Timer
	retryAt time.Time    // when retry fires
	watched []netip.Addr // last given to the announcer's SetWatched
	// refreshes is what the announcer's SetRefresh was last given.
	refreshes map[netip.Addr]time.Duration
	// backAddrs are the addresses of the first sync after this node came
	// back at backSeen (Speaker.back): the ones another speaker may have
	// announced while it was away.
	backSeen  time.Time
	backAddrs map[netip.Addr]bool
	// drainsGiven is what the announcer's SetDraining was last given.
	drainsGiven map[netip.Addr][]net.HardwareAddr

	// probes holds new addresses back until a probe finds them free
	// (conflict.go); nil when the announcer cannot probe.
	probes *probeGuard
}

// New builds a speaker; Run starts it.
func New(client kubernetes.Interface, announcer Announcer, opts Options) *Speaker {
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	s := &Speaker{
		opts: opts, client: client, announcer: announcer, metrics: opts.Metrics,
		kick:      make(chan struct{}, 1),
		owners:    map[netip.Addr]string{},
		waiting:   map[netip.Addr]time.Time{},
		yields:    map[netip.Addr]time.Time{},
		splits:    map[netip.Addr]split{},
		drains:    map[netip.Addr]drain{},
		handovers: map[netip.Addr]handover{},
		foreign:   map[netip.Addr]foreignClaim{},
		checkable: map[netip.Addr]checkState{},
		requested: map[netip.Addr]time.Time{},

		dupReported: map[dupKey]time.Time{},
	}
	if p, ok := announcer.(Prober); ok {
		s.probes = newProbeGuard(p, s.foreignMAC, s.Kick, s.reportConflict, s.metrics)
	}
	if s.opts.LocalServingWait <= 0 {
		s.opts.LocalServingWait = 5 * time.Second
	}
	s.factory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(stripManagedFields))
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.Kick() },
		UpdateFunc: func(any, any) { s.Kick() },
		DeleteFunc: func(any) { s.Kick() },
	}
	svcInf := s.factory.Core().V1().Services()
	esInf := s.factory.Discovery().V1().EndpointSlices()
	nodeInf := s.factory.Core().V1().Nodes()
	s.services, s.slices, s.nodes = svcInf.Lister(), esInf.Lister(), nodeInf.Lister()
	for _, inf := range []cache.SharedIndexInformer{svcInf.Informer(), esInf.Informer(), nodeInf.Informer()} {
		inf.AddEventHandler(handler)
		s.synced = append(s.synced, inf.HasSynced)
	}
	// Only the controller's accepted copy of the config is read, never
	// the user's ConfigMap: a config the controller refused must not
	// change where or how addresses are announced (api.AcceptedConfigName).
	s.cmFactory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "metadata.name=" + api.AcceptedConfigName(opts.ConfigName)
		}))
	cmInf := s.cmFactory.Core().V1().ConfigMaps()
	s.configs = cmInf.Lister()
	cmInf.Informer().AddEventHandler(handler)
	s.synced = append(s.synced, cmInf.Informer().HasSynced)

	s.conds = newCondWriter(client, opts.NodeName, s.metrics, func(k types.NamespacedName) (*corev1.Service, error) {
		return s.services.Services(k.Namespace).Get(k.Name)
	})
	s.recorder = evrec.New(client, api.ReportingSpeaker, opts.NodeName)
	return s
}

func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.ObjectMetaAccessor); ok {
		m.GetObjectMeta().SetManagedFields(nil)
	}
	return obj, nil
}

// Kick asks the sync loop to recompute; it never blocks.
func (s *Speaker) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// MembersChanged records the live speakers and recomputes at once. It is
// the failover path: no API call happens between here and the announcer.
func (s *Speaker) MembersChanged(members []string) {
	s.mu.Lock()
	// A split brain comes from two different views of the membership; a
	// new view may have settled it, or made this node the rightful owner.
	// A speaker that comes back shares this node's view again.
	clear(s.yields)
	for ip, st := range s.splits {
		if !slices.Contains(s.members, st.other) && slices.Contains(members, st.other) {
			delete(s.splits, ip)
		}
	}
	if slices.Contains(members, s.opts.NodeName) && !slices.Contains(s.members, s.opts.NodeName) {
		s.back = time.Now()
	}
	s.members = slices.Clone(members)
	s.changed = time.Now()
	s.mu.Unlock()
	if s.conds != nil {
		s.conds.forget()
	}
	s.metrics.members.Set(float64(len(members)))
	s.Kick()
}

// SetIsolated makes the speaker announce nothing while true: its link is
// down, or it has not yet merged its membership view with the others after
// the link came back, so its belief that everyone else is dead is stale.
func (s *Speaker) SetIsolated(v bool) {
	s.mu.Lock()
	if s.isolated && !v {
		s.back = time.Now()
	}
	s.isolated = v
	s.changed = time.Now()
	s.mu.Unlock()
	s.Kick()
}

// Run waits for the caches, then keeps the announcer in line with the
// elected owners until ctx ends.
func (s *Speaker) Run(ctx context.Context) error {
	if err := s.recorder.Start(ctx); err != nil {
		return fmt.Errorf("starting the Event recorder: %w", err)
	}
	s.factory.Start(ctx.Done())
	s.cmFactory.Start(ctx.Done())
	defer s.factory.Shutdown()
	defer s.cmFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return fmt.Errorf("caches did not sync: %w", ctx.Err())
	}
	klog.FromContext(ctx).Info("Speaker started", "node", s.opts.NodeName)
	go s.conds.run(ctx)
	go s.checkLoop(ctx)
	s.sync(ctx)
	for {
		select {
		case <-ctx.Done():
			s.announcer.SetOwned(nil)
			return nil
		case <-s.kick:
			s.sync(ctx)
		}
	}
}

// Ready reports whether the caches have synced.
func (s *Speaker) Ready() bool {
	for _, f := range s.synced {
		if !f() {
			return false
		}
	}
	return true
}

// sync recomputes the owners and updates the announcer.
func (s *Speaker) sync(ctx context.Context) {
	logger := klog.FromContext(ctx)
	s.loadConfig(ctx)
	s.mu.Lock()
	members, isolated, changed, cfg, back := s.members, s.isolated, s.changed, s.cfg, s.back
	s.mu.Unlock()

	addrs, users := s.addresses(cfg)
	s.users.Store(&users)
	if !back.Equal(s.backSeen) && !isolated {
		// The addresses there were when this node came back; one
		// assigned later was never announced elsewhere meanwhile.
		s.backSeen = back
		s.backAddrs = make(map[netip.Addr]bool, len(addrs))
		for _, a := range addrs {
			s.backAddrs[a.IP] = true
		}
	}
	if s.backAddrs != nil && time.Since(back) >= s.drainBound() {
		s.backAddrs = nil // the return window is over
	}
	nodes := s.electionNodes()
	owners := s.elector.Elect(addrs, nodes, members)
	// The owners loop below rewrites owners for its bookkeeping (an
	// address held back keeps its previous owner on record); the condition
	// says who is elected.
	elected := maps.Clone(owners)
	mine := map[netip.Addr][]string{}
	// announce is mine plus the addresses this node drains after handing
	// them to another live speaker (handover.go).
	announce := map[netip.Addr][]string{}
	held := false
	var yieldEnds, drainEnds time.Time
	var byName map[string]election.Node // nodes by name, built when needed
	now := time.Now()
	s.mu.Lock()
	if isolated {
		// An isolated node cannot tell whether the new owner announces.
		clear(s.drains)
	}
	for ip, h := range s.handovers {
		if !now.Before(h.until) {
			delete(s.handovers, ip)
		}
	}
	for ip, c := range s.peerClaims {
		if now.Sub(c.at) >= drainSlack {
			delete(s.peerClaims, ip)
		}
	}
	s.mu.Unlock()
	if !isolated {
		for _, a := range addrs {
			if owners[a.IP] != s.opts.NodeName {
				delete(s.waiting, a.IP)
				s.mu.Lock()
				_, was := s.announcing[a.IP]
				d, until := s.draining(a.IP, was, owners[a.IP], members, now)
				s.mu.Unlock()
				if d {
					announce[a.IP] = interfacesFor(cfg, a.IP)
					if drainEnds.IsZero() || until.Before(drainEnds) {
						drainEnds = until
					}
				}
				continue
			}
			s.mu.Lock()
			y, until := s.yielded(a.IP, now)
			s.mu.Unlock()
			if y {
				if yieldEnds.IsZero() || until.Before(yieldEnds) {
					yieldEnds = until
				}
				continue
			}
			if s.holdBack(ctx, a.IP, users[a.IP], members) {
				held = true
				continue
			}
			if !s.probeGate(ctx, a.IP, interfacesFor(cfg, a.IP), users[a.IP]) {
				continue
			}
			mine[a.IP] = interfacesFor(cfg, a.IP)
			announce[a.IP] = mine[a.IP]
			if s.backAddrs[a.IP] && now.Sub(back) < s.drainBound() {
				if byName == nil {
					byName = make(map[string]election.Node, len(nodes))
					for _, n := range nodes {
						byName[n.Name] = n
					}
				}
				s.mu.Lock()
				s.returnHandover(a, users[a.IP], byName, members, now)
				s.mu.Unlock()
			}
		}
	}
	for ip := range s.waiting {
		if _, ok := owners[ip]; !ok {
			delete(s.waiting, ip)
		}
	}
	s.mu.Lock()
	for ip := range s.drains {
		if _, ok := announce[ip]; !ok {
			// The address is gone, or the drain ended: never keep
			// answering for an address no Service holds.
			delete(s.drains, ip)
		}
	}
	s.mu.Unlock()
	s.probesSynced(addrs, users)
	s.announcer.SetOwned(announce)
	if d, ok := s.announcer.(drainer); ok && s.opts.MACsOf != nil {
		// After SetOwned: a drain that ended must be withdrawn from the
		// owned set before the announcer stops treating it as a drain,
		// or it would answer for it again in between.
		s.mu.Lock()
		targets := s.drainTargets(announce)
		s.mu.Unlock()
		if !sameDrainTargets(targets, s.drainsGiven) {
			d.SetDraining(targets)
			s.drainsGiven = targets
		}
	}
	if r, ok := s.announcer.(refresher); ok {
		// Pools with their own refresh-interval.
		intervals := map[netip.Addr]time.Duration{}
		for ip := range announce {
			if p := poolOf(cfg, ip); p != nil && p.Refresh != 0 {
				intervals[ip] = max(p.Refresh, 0)
			}
		}
		if !maps.Equal(intervals, s.refreshes) {
			r.SetRefresh(intervals)
			s.refreshes = intervals
		}
	}
	s.mu.Lock()
	s.announcing = announce
	for ip := range s.checkable {
		if _, ok := owners[ip]; !ok {
			delete(s.checkable, ip)
		}
	}
	for _, a := range addrs {
		o, ok := owners[a.IP]
		if !ok {
			continue
		}
		if c, seen := s.checkable[a.IP]; !seen || c.owner != o {
			s.checkable[a.IP] = checkState{owner: o, since: now, ifaces: interfacesFor(cfg, a.IP)}
		}
	}
	for ip := range s.requested {
		if _, ok := announce[ip]; !ok {
			delete(s.requested, ip)
		}
	}
	s.mu.Unlock()
	s.metrics.owned.Set(float64(len(mine)))
	s.mu.Lock()
	watch, reannounce, next := s.settleSplits(time.Now(), mine)
	s.mu.Unlock()
	if sb, ok := s.announcer.(splitBrainAnnouncer); ok {
		if !slices.Equal(watch, s.watched) {
			sb.SetWatched(watch)
			s.watched = watch
		}
		for _, ip := range reannounce {
			sb.Reannounce(ip)
		}
	}
	for _, t := range []time.Time{yieldEnds, drainEnds} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	switch {
	case held:
		s.retryIn(100 * time.Millisecond)
	case !next.IsZero():
		s.retryIn(time.Until(next))
	}

	tookOver := false
	for ip, owner := range owners {
		prev, had := s.owners[ip]
		if had && prev == owner {
			continue
		}
		if _, wait := s.waiting[ip]; wait || s.probeHolding(ip) {
			// Not announced yet: keep the old owner on record so that the
			// next sync still sees a handover, and the Event waits too.
			owners[ip] = prev
			if !had {
				delete(owners, ip)
			}
			continue
		}
		if owner == s.opts.NodeName && !isolated {
			logger.Info("Announcing address", "ip", ip, "previousOwner", prev)
			if had && prev != "" && !slices.Contains(members, prev) {
				tookOver = true
			}
			if had && prev != "" && prev != owner && slices.Contains(members, prev) {
				// prev drains until it hears this node: its answers
				// meanwhile are expected.
				s.mu.Lock()
				s.handovers[ip] = handover{from: prev, until: now.Add(s.drainBound() + time.Second)}
				s.mu.Unlock()
			}
			for _, svc := range users[ip] {
				s.recorder.Eventf(svc, corev1.EventTypeNormal, api.EventNodeAssigned, "announcing from node %q with protocol %q", s.opts.NodeName, api.ProtocolLayer2)
			}
		}
	}
	if tookOver && !changed.IsZero() {
		// Once per takeover, however many addresses moved.
		d := time.Since(changed).Seconds()
		s.metrics.failover.Set(d)
		s.metrics.failovers.Observe(d)
	}
	s.owners = owners
	if !isolated {
		if t := s.updateConditions(cfg, elected, members, now); !t.IsZero() {
			s.retryIn(time.Until(t))
		}
	}
}

// updateConditions records the ironlb.io/Announced condition of every
// Service this node writes it for (condition.go). It returns when a
// foreign claim ages out of a condition, zero if none does.
func (s *Speaker) updateConditions(cfg *config.Config, owners map[netip.Addr]string, members []string, now time.Time) time.Time {
	var ifis []net.Interface
	if s.opts.Interfaces != nil {
		ifis = s.opts.Interfaces()
	}
	local := func(ip netip.Addr) ([]string, []string) { return localInterfaces(ifis, interfacesFor(cfg, ip)) }
	var next time.Time
	s.mu.Lock()
	foreign := map[netip.Addr]string{}
	for ip, c := range s.foreign {
		if until := c.at.Add(foreignClaimFor); now.Before(until) {
			foreign[ip] = c.mac
			if next.IsZero() || until.Before(next) {
				next = until
			}
		} else {
			delete(s.foreign, ip)
		}
	}
	s.mu.Unlock()
	first := ""
	if len(members) > 0 {
		first = slices.Min(members)
	}
	conflicts := s.Conflicts()
	svcs, _ := s.services.List(labels.Everything())
	for _, svc := range svcs {
		if service.Ours(svc, s.opts.LBClass) && len(service.IngressIPs(svc)) > 0 {
			if c, mine := announceCondition(s.opts.NodeName, svc, owners, members, local,
				func(ip netip.Addr) string { return foreign[ip] },
				func(ip netip.Addr) string {
					if mac, ok := conflicts[ip]; ok {
						return mac.String()
					}
					return ""
				}); mine {
				s.conds.set(svc, c)
			}
			continue
		}
		// Ours without an address (any more), or no LoadBalancer at all:
		// the condition goes, removed by one speaker. A LoadBalancer of
		// another class is left alone: another ironlb installation (its
		// --lb-class) may be the one announcing it.
		gone := svc.Spec.Type != corev1.ServiceTypeLoadBalancer || service.Ours(svc, s.opts.LBClass)
		if gone && currentCondition(svc) != nil && first == s.opts.NodeName {
			s.conds.set(svc, nil)
		}
	}
	return next
}

// holdBack reports whether this node, the new owner of ip, should not
// announce it yet: it takes ip over from a speaker that is still alive (so
// clients reaching that node are still served), a Local Service uses ip,
// and this node's proxy does not forward to its local endpoint yet.
// Announcing then would draw the clients to a node that drops their
// traffic for up to a second. The wait is bounded by LocalServingWait.
func (s *Speaker) holdBack(ctx context.Context, ip netip.Addr, svcs []*corev1.Service, members []string) bool {
	prev, had := s.owners[ip]
	since, waiting := s.waiting[ip]
	// A dead previous owner forwards nothing: that is a failover, which
	// never waits, even when the owner died during a wait.
	if s.opts.LocalServing == nil || !had || prev == s.opts.NodeName || !slices.Contains(members, prev) {
		delete(s.waiting, ip)
		return false
	}
	if !waiting {
		since = time.Now()
	}
	for _, svc := range svcs {
		if svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal || s.opts.LocalServing(ctx, svc) {
			continue
		}
		if time.Since(since) >= s.opts.LocalServingWait {
			klog.FromContext(ctx).Info("The service proxy still has no local endpoint; announcing anyway", "ip", ip, "service", klog.KObj(svc), "waited", time.Since(since).Round(time.Millisecond))
			break
		}
		if !waiting {
			klog.FromContext(ctx).V(1).Info("Waiting for the service proxy to forward to the local endpoint before taking the address over", "ip", ip, "service", klog.KObj(svc), "from", prev)
		}
		s.waiting[ip] = since
		return true
	}
	delete(s.waiting, ip)
	return false
}

// retryIn kicks the sync loop after d, once however often it is asked:
// the earliest pending retry stands (a sync asks for several: a held
// handover, a split brain's reminder, a condition to age out), and the sync
// it causes asks for the next ones again. Called by the sync loop only.
func (s *Speaker) retryIn(d time.Duration) {
	at := time.Now().Add(d)
	if s.retry != nil && time.Now().Before(s.retryAt) && !at.Before(s.retryAt) {
		return
	}
	if s.retry != nil {
		s.retry.Stop()
	}
	s.retryAt = at
	s.retry = time.AfterFunc(d, s.Kick)
}

// loadConfig takes the config the controller accepted last, from its
// accepted copy. Without a copy (none published yet, or deleted until the
// controller writes it back) and with a copy that does not match its hash
// or does not parse, the config this speaker has stays in force.
func (s *Speaker) loadConfig(ctx context.Context) {
	name := api.AcceptedConfigName(s.opts.ConfigName)
	cm, err := s.configs.ConfigMaps(s.opts.Namespace).Get(name)
	if err != nil {
		return
	}
	s.mu.Lock()
	same := cm.ResourceVersion == s.cfgRV
	s.cfgRV = cm.ResourceVersion
	s.mu.Unlock()
	if same {
		return
	}
	logger := klog.FromContext(ctx).WithValues("configmap", klog.KObj(cm))
	text := cm.Data[api.ConfigKey]
	if want := cm.Annotations[api.AnnotationAcceptedSHA256]; want != api.ConfigHash(text) {
		logger.Info("Ignoring the accepted config: its text does not match its hash (edited by hand?); the controller writes it back", "annotation", api.AnnotationAcceptedSHA256)
		return
	}
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		logger.Info("Ignoring an accepted config this speaker cannot parse (a newer controller?); the last one stays in force", "problems", err.Error())
		return
	}
	s.mu.Lock()
	s.cfg = cfg
	s.mu.Unlock()
	logger.Info("Applying the accepted address-pool config", "from", cm.Annotations[api.AnnotationAcceptedResourceVersion], "pools", len(cfg.Pools))
}

// addresses lists every assigned address with the Services using it.
func (s *Speaker) addresses(cfg *config.Config) ([]election.Address, map[netip.Addr][]*corev1.Service) {
	svcs, _ := s.services.List(labels.Everything())
	byIP := map[netip.Addr][]election.Service{}
	users := map[netip.Addr][]*corev1.Service{}
	for _, svc := range svcs {
		if !service.Ours(svc, s.opts.LBClass) {
			continue
		}
		ips := service.IngressIPs(svc)
		if len(ips) == 0 {
			continue
		}
		es := election.Service{Key: svc.Namespace + "/" + svc.Name, Local: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal}
		if es.Local {
			es.EndpointNodes = s.endpointNodes(svc)
		}
		for _, ip := range ips {
			byIP[ip] = append(byIP[ip], es)
			users[ip] = append(users[ip], svc)
		}
	}
	out := make([]election.Address, 0, len(byIP))
	for _, ip := range slices.SortedFunc(maps.Keys(byIP), func(a, b netip.Addr) int { return a.Compare(b) }) {
		a := election.Address{IP: ip, Services: byIP[ip]}
		if p := poolOf(cfg, ip); p != nil && len(p.NodeSelectors) > 0 {
			a.NodeAllowed = p.MatchesNode
		}
		out = append(out, a)
	}
	return out, users
}

// endpointNodes lists the nodes hosting a ready endpoint of svc.
func (s *Speaker) endpointNodes(svc *corev1.Service) []string {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
	list, _ := s.slices.EndpointSlices(svc.Namespace).List(sel)
	var nodes []string
	for _, es := range list {
		for _, ep := range es.Endpoints {
			if ep.NodeName == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			nodes = append(nodes, *ep.NodeName)
		}
	}
	slices.Sort(nodes)
	return slices.Compact(nodes)
}

func (s *Speaker) electionNodes() []election.Node {
	list, _ := s.nodes.List(labels.Everything())
	out := make([]election.Node, 0, len(list))
	for _, n := range list {
		en := election.Node{Name: n.Name, Labels: n.Labels}
		_, en.Excluded = n.Labels[api.LabelExcludeFromLB]
		for _, c := range n.Status.Conditions {
			switch c.Type {
			case corev1.NodeReady:
				en.Ready = c.Status == corev1.ConditionTrue
			case corev1.NodeNetworkUnavailable:
				en.NetworkUnavailable = c.Status == corev1.ConditionTrue
			}
		}
		out = append(out, en)
	}
	return out
}

func poolOf(cfg *config.Config, ip netip.Addr) *config.Pool {
	if cfg == nil {
		return nil
	}
	for i := range cfg.Pools {
		for _, r := range cfg.Pools[i].Ranges {
			if r.Contains(ip) {
				return &cfg.Pools[i]
			}
		}
	}
	return nil
}

func interfacesFor(cfg *config.Config, ip netip.Addr) []string {
	if p := poolOf(cfg, ip); p != nil && len(p.Interfaces) > 0 {
		return slices.Clone(p.Interfaces)
	}
	return nil
}

// MemberlistKey reads the memberlist encryption key from its Secret,
// waiting for the controller to create it.
func MemberlistKey(ctx context.Context, client kubernetes.Interface, namespace string) ([]byte, error) {
	logger := klog.FromContext(ctx)
	for {
		sec, err := client.CoreV1().Secrets(namespace).Get(ctx, api.MemberlistSecret, metav1.GetOptions{})
		if err == nil {
			key := sec.Data[api.MemberlistSecretKey]
			if len(key) != 32 {
				return nil, fmt.Errorf("Secret %s/%s key %q has %d bytes, want 32 (AES-256); delete the Secret and the controller recreates it", namespace, api.MemberlistSecret, api.MemberlistSecretKey, len(key))
			}
			return key, nil
		}
		if !apierrors.IsNotFound(err) && !strings.Contains(err.Error(), "connection refused") {
			logger.Error(err, "Reading the memberlist Secret")
		} else {
			logger.Info("Waiting for the memberlist Secret", "secret", klog.KRef(namespace, api.MemberlistSecret))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
