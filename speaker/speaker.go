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
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/controller"
	"github.com/ironlb/ironlb/speaker/election"
)

// Announcer answers ARP/NDP for the addresses it is given.
type Announcer interface {
	// SetOwned replaces the set of owned addresses. Each maps to the
	// interfaces it may be announced on; nil means every interface.
	SetOwned(owned map[netip.Addr][]string)
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
	recorder  record.EventRecorder

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
	cfg      *config.Config
	cfgRV    string
	// yields holds addresses this node keeps silent after losing a split
	// brain to another speaker, until when (DuplicateAnnouncer).
	yields map[netip.Addr]time.Time
	// splits holds the split brains this node won, by address.
	splits map[netip.Addr]split

	dupMu       sync.Mutex
	dupReported map[dupKey]time.Time // last report per address and claimant

	// Owned by the sync loop.
	owners  map[netip.Addr]string
	waiting map[netip.Addr]time.Time // handovers held back for LocalServing, since when
	retry   *time.Timer
	watched []netip.Addr // last given to the announcer's SetWatched
}

// New builds a speaker; Run starts it.
func New(client kubernetes.Interface, announcer Announcer, opts Options) *Speaker {
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	s := &Speaker{
		opts: opts, client: client, announcer: announcer, metrics: opts.Metrics,
		kick:    make(chan struct{}, 1),
		owners:  map[netip.Addr]string{},
		waiting: map[netip.Addr]time.Time{},
		yields:  map[netip.Addr]time.Time{},
		splits:  map[netip.Addr]split{},

		dupReported: map[dupKey]time.Time{},
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
	s.cmFactory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "metadata.name=" + opts.ConfigName }))
	cmInf := s.cmFactory.Core().V1().ConfigMaps()
	s.configs = cmInf.Lister()
	cmInf.Informer().AddEventHandler(handler)
	s.synced = append(s.synced, cmInf.Informer().HasSynced)

	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	s.recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "ironlb-speaker", Host: opts.NodeName})
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
	s.members = slices.Clone(members)
	s.changed = time.Now()
	s.mu.Unlock()
	s.metrics.members.Set(float64(len(members)))
	s.Kick()
}

// SetIsolated makes the speaker announce nothing while true: its link is
// down, or it has not yet merged its membership view with the others after
// the link came back, so its belief that everyone else is dead is stale.
func (s *Speaker) SetIsolated(v bool) {
	s.mu.Lock()
	s.isolated = v
	s.changed = time.Now()
	s.mu.Unlock()
	s.Kick()
}

// Run waits for the caches, then keeps the announcer in line with the
// elected owners until ctx ends.
func (s *Speaker) Run(ctx context.Context) error {
	s.factory.Start(ctx.Done())
	s.cmFactory.Start(ctx.Done())
	defer s.factory.Shutdown()
	defer s.cmFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return fmt.Errorf("caches did not sync: %w", ctx.Err())
	}
	klog.FromContext(ctx).Info("Speaker started", "node", s.opts.NodeName)
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
	members, isolated, changed, cfg := s.members, s.isolated, s.changed, s.cfg
	s.mu.Unlock()

	addrs, users := s.addresses(cfg)
	nodes := s.electionNodes()
	owners := s.elector.Elect(addrs, nodes, members)
	mine := map[netip.Addr][]string{}
	held := false
	var yieldEnds time.Time
	if !isolated {
		now := time.Now()
		for _, a := range addrs {
			if owners[a.IP] != s.opts.NodeName {
				delete(s.waiting, a.IP)
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
			mine[a.IP] = interfacesFor(cfg, a.IP)
		}
	}
	for ip := range s.waiting {
		if _, ok := owners[ip]; !ok {
			delete(s.waiting, ip)
		}
	}
	s.announcer.SetOwned(mine)
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
	if !yieldEnds.IsZero() && (next.IsZero() || yieldEnds.Before(next)) {
		next = yieldEnds
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
		if _, wait := s.waiting[ip]; wait {
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

// retryIn kicks the sync loop after d, once however often it is asked.
func (s *Speaker) retryIn(d time.Duration) {
	if s.retry != nil {
		s.retry.Stop()
	}
	s.retry = time.AfterFunc(d, s.Kick)
}

// loadConfig takes the latest valid config; an invalid one keeps the last
// good one in force, as in the controller.
func (s *Speaker) loadConfig(ctx context.Context) {
	cm, err := s.configs.ConfigMaps(s.opts.Namespace).Get(s.opts.ConfigName)
	if apierrors.IsNotFound(err) || err != nil {
		return
	}
	s.mu.Lock()
	same := cm.ResourceVersion == s.cfgRV
	s.cfgRV = cm.ResourceVersion
	s.mu.Unlock()
	if same {
		return
	}
	cfg, err := config.Parse([]byte(cm.Data[api.ConfigKey]))
	if err != nil {
		klog.FromContext(ctx).Info("Ignoring invalid address-pool config; the last good one stays in force", "problems", err.Error())
		return
	}
	s.mu.Lock()
	s.cfg = cfg
	s.mu.Unlock()
}

// addresses lists every assigned address with the Services using it.
func (s *Speaker) addresses(cfg *config.Config) ([]election.Address, map[netip.Addr][]*corev1.Service) {
	svcs, _ := s.services.List(labels.Everything())
	byIP := map[netip.Addr][]election.Service{}
	users := map[netip.Addr][]*corev1.Service{}
	for _, svc := range svcs {
		if !controller.Ours(svc, s.opts.LBClass) {
			continue
		}
		ips := controller.IngressIPs(svc)
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
