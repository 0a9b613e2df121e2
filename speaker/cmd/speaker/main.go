// Command speaker runs on every node: it joins the other speakers through
// memberlist, elects one owner per assigned address, and answers ARP and
// NDP for the addresses this node owns.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/api/kubeclient"
	"github.com/ironlb/ironlb/speaker"
	"github.com/ironlb/ironlb/speaker/layer2"
	"github.com/ironlb/ironlb/speaker/linkwatch"
	"github.com/ironlb/ironlb/speaker/membership"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("speaker", flag.ContinueOnError)
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "this node's name (default: $NODE_NAME, set from the downward API)")
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig; empty means as kubectl: $KUBECONFIG, else ~/.kube/config, else the in-cluster config")
	namespace := fs.String("namespace", api.DefaultNamespace, "namespace of the ConfigMap and the memberlist Secret")
	configName := fs.String("config-name", api.DefaultConfigName, "name of the address-pool ConfigMap")
	lbClass := fs.String("lb-class", "", "announce only Services with this loadBalancerClass (empty: Services without one), as the controller's --lb-class")
	bindAddr := fs.String("bind-addr", "", "address memberlist listens on and advertises (default: the node's InternalIP)")
	bindPort := fs.Int("bind-port", membership.DefaultPort, "memberlist port (TCP and UDP)")
	peers := fs.String("peers", "", "comma-separated host[:port] of other speakers (default: the InternalIPs of every Node)")
	ifaces := fs.String("interfaces", "", "comma-separated interfaces to answer on (default: every up, non-loopback interface that can ARP and has a global unicast address, except bond and bridge members)")
	metricsAddr := fs.String("metrics-addr", ":7474", "address for /metrics; empty disables")
	healthAddr := fs.String("health-addr", ":7475", "address for /healthz and /readyz; empty disables")
	refresh := fs.Duration("refresh-interval", layer2.DefaultRefresh, "announce each owned address again this often (±10 %), so switch MAC tables do not age out while clients keep their ARP entries; 0 turns it off")
	checkInterval := fs.Duration("check-interval", speaker.DefaultCheckInterval, "how often (±20 %) to check that the owners of a sample of other nodes' addresses answer ARP/NDP for them (NotAnswering/WrongAnnouncer Events); 0 turns the checks off")
	checkSample := fs.Int("check-sample", speaker.DefaultCheckSample, "addresses owned by other nodes checked per round at most (one ARP request or Neighbor Solicitation each, two when the first gets no answer from the owner)")
	profiling := fs.Bool("profiling", false, "also serve Go's runtime profiles under /debug/pprof/ on --metrics-addr")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	verbosity := fs.String("v", "0", "log verbosity")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	klogFlags.Set("v", *verbosity)
	if *refresh < 0 {
		fmt.Fprintf(os.Stderr, "speaker: --refresh-interval=%v: want a positive duration, or 0 to turn refreshing off\n", *refresh)
		return 2
	}
	if *checkInterval < 0 || *checkSample < 1 {
		fmt.Fprintf(os.Stderr, "speaker: --check-interval=%v --check-sample=%d: want a positive interval (or 0 to turn the checks off) and a sample of at least 1\n", *checkInterval, *checkSample)
		return 2
	}
	if *nodeName == "" {
		fmt.Fprintln(os.Stderr, "speaker: --node-name is required (or set NODE_NAME from the downward API: fieldRef spec.nodeName)")
		return 2
	}

	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := klog.Background().WithName("speaker").WithValues("node", *nodeName)
	ctx := klog.NewContext(context.Background(), logger)

	// The probes are served from the start: the speaker first waits for
	// the memberlist Secret (the controller creates it on a fresh install)
	// and opens its sockets, and a kubelet probing a closed port meanwhile
	// raises a Warning Event for nothing. Alive is alive; ready waits for
	// the speaker to run with synced caches.
	var running atomic.Pointer[speaker.Speaker]
	var answering atomic.Pointer[layer2.Announcer]
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if sp := running.Load(); sp == nil || !sp.Ready() {
			http.Error(w, "waiting for the memberlist key, the sockets and the caches", http.StatusServiceUnavailable)
			return
		}
		// A node that should answer on an interface but cannot is not
		// ready: that is where an operator looks first.
		if ann := answering.Load(); ann != nil {
			if err := ann.Healthy(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	serve(ctx, *healthAddr, "/", mux)

	cfg, err := kubeclient.Config(*kubeconfig, "ironlb-speaker")
	if err != nil {
		logger.Error(err, "Cannot build the API client config")
		return 1
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		logger.Error(err, "Cannot build the API client")
		return 1
	}

	waitCtx := klog.NewContext(sigCtx, logger)
	key, err := speaker.MemberlistKey(waitCtx, client, *namespace)
	if err != nil {
		logger.Error(err, "No memberlist key")
		return 1
	}
	self, peerList, err := addresses(waitCtx, client, *nodeName, *bindAddr, *peers, *bindPort)
	if err != nil {
		logger.Error(err, "Cannot work out memberlist addresses")
		return 1
	}
	allow := splitList(*ifaces)
	pick := func() ([]net.Interface, error) {
		ifis, err := layer2.Interfaces(allow)
		if allow == nil {
			ifis = layer2.WithGlobalAddress(ifis)
		}
		return ifis, err
	}
	ifis, err := pick()
	if err != nil || len(ifis) == 0 {
		logger.Error(err, "No interface to answer ARP/NDP on", "allowList", *ifaces)
		return 1
	}
	names, macs := ifaceNames(ifis), ifaceMACs(ifis)

	// The announcer and the speaker outlive the signal: on SIGTERM this
	// node leaves memberlist first, so a successor announces while this
	// node still answers, and only then stops.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	// Claims by other MACs on an address this node announces are defended
	// by the announcer itself; the speaker reports them (Event, metric) and
	// settles a split brain with another speaker, whose MACs the directory
	// learns from memberlist metadata. Claims heard before the speaker runs
	// are defended but not reported: no Service is known yet.
	dir := membership.NewDirectory()
	refreshOpt := *refresh
	if refreshOpt == 0 {
		refreshOpt = -1 // layer2: negative is off, zero the default
	}
	ann := layer2.New(runCtx, layer2.Options{Refresh: refreshOpt, OnConflict: func(c layer2.Conflict) {
		if sp := running.Load(); sp != nil {
			sp.DuplicateAnnouncer(runCtx, c.Addr, c.MAC)
		}
	}, Peer: func(mac net.HardwareAddr) bool { return dir.NodeOf(mac) != "" }})
	if err := ann.SetInterfaces(ifis); err != nil {
		logger.Error(err, "Cannot open ARP/NDP sockets (the speaker needs CAP_NET_RAW)", "interfaces", names)
		return 1
	}
	metrics := speaker.NewMetrics()
	registerLayer2(metrics.Registry, ann)
	checkOpt := *checkInterval
	if checkOpt == 0 {
		checkOpt = -1 // speaker: negative is off, zero the default
	}
	// The speaker asks owners through memberlist, which starts after it.
	var memberRef atomic.Pointer[membership.Member]
	sp := speaker.New(client, announcer{ann, logger}, speaker.Options{
		NodeName: *nodeName, Namespace: *namespace, ConfigName: *configName, LBClass: *lbClass, Metrics: metrics,
		LocalServing: proxyServes(self), MACOwner: dir.NodeOf, MACsOf: dir.MACsOf, Interfaces: ann.Interfaces,
		Check: checkLAN(ann), CheckInterval: checkOpt, CheckSample: *checkSample,
		AskOwner: func(node string, msg []byte) error {
			if m := memberRef.Load(); m != nil {
				return m.Send(node, msg)
			}
			return errors.New("memberlist is not running yet")
		},
	})
	mcfg := membership.Config{
		Name: *nodeName, BindAddr: self, BindPort: *bindPort, AdvertiseAddr: self,
		Peers: peerList, Key: key, Logger: logger.WithName("memberlist"), OnChange: sp.MembersChanged,
		MACs: macs, Directory: dir,
		OnMessage: func(msg []byte) { sp.HandleMessage(runCtx, msg) },
	}
	member, err := membership.NewMember(mcfg)
	if err != nil {
		logger.Error(err, "Cannot start memberlist", "bind", net.JoinHostPort(self, strconv.Itoa(*bindPort)))
		return 1
	}
	memberRef.Store(member)
	testHooks(runCtx, ann, logger)
	done := make(chan struct{})
	go func() { defer close(done); sp.Run(runCtx) }()
	metricsMux := http.NewServeMux()
	metricsMux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	if *profiling {
		metricsMux.HandleFunc("/debug/pprof/", pprof.Index)
		metricsMux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		metricsMux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	serve(runCtx, *metricsAddr, "/", metricsMux)
	running.Store(sp)
	answering.Store(ann)

	_ = member.Rejoin(runCtx)
	// Links are watched through kernel notifications. Each change may
	// bring an interface to answer on (one created or given an address
	// after the start) or take one away, and decides isolation: nothing
	// is announced while every link that reaches the other speakers has
	// lost carrier, and once one is back only after a fresh membership has
	// merged with the others (membership.Member says why).
	watched := linkwatch.Reaching(ifis, self)
	lw := linkwatch.Config{
		Changed: func([]linkwatch.Link) []string {
			now, err := pick()
			if err != nil {
				logger.Error(err, "Cannot list interfaces; keeping the current ones", "interfaces", names)
				return watched
			}
			if ann.Healthy() != nil && sameInterfaces(now, ifis) {
				// A responder lost its sockets (or never got them): open
				// them again, on any link change or at the latest on the
				// next resync.
				if err := ann.SetInterfaces(now); err != nil {
					logger.Error(err, "Cannot reopen ARP/NDP sockets", "interfaces", names)
				} else {
					logger.Info("Reopened ARP/NDP sockets", "interfaces", names)
				}
			}
			if n := ifaceNames(now); !slices.Equal(n, names) || !sameInterfaces(now, ifis) {
				logger.Info("Interfaces to answer on changed", "was", names, "now", n)
				if err := ann.SetInterfaces(now); err != nil {
					logger.Error(err, "Cannot open ARP/NDP sockets on every interface", "interfaces", n)
				}
				ifis, names = now, n
				watched = linkwatch.Reaching(ifis, self)
				// The others tell this node's MACs from a foreign host's
				// by what it publishes.
				if err := member.SetMACs(ifaceMACs(ifis), time.Second); err != nil {
					logger.Error(err, "Cannot publish the new interface MACs to the other speakers")
				}
			}
			return watched
		},
		// Also how long a responder that lost its sockets waits, at most,
		// to be opened again.
		Resync: 10 * time.Second,
		Isolate: func() {
			sp.SetIsolated(true)
			member.Isolate()
		},
		Reconnect: func() error {
			if err := member.Reconnect(runCtx); err != nil {
				return err
			}
			// The speaker still holds the view from before the cut; hand it
			// the merged one before it may announce again.
			sp.MembersChanged(member.Members())
			sp.SetIsolated(false)
			return nil
		},
	}
	logger.Info("Speaker running", "interfaces", names, "isolationWatch", watched, "memberlist", net.JoinHostPort(self, strconv.Itoa(*bindPort)), "peers", peerList)
	blind := make(chan error, 1)
	go func() {
		// Without link notifications a cable pull would go unnoticed and
		// this node would keep its addresses: better to stop and be
		// restarted than to run blind.
		if err := linkwatch.Run(runCtx, lw); err != nil {
			blind <- err
		}
	}()

	code := 0
	select {
	case <-sigCtx.Done():
		logger.Info("Stopping: leaving the cluster so another node takes over")
	case err := <-blind:
		logger.Error(err, "Cannot watch links; stopping: leaving the cluster so another node takes over")
		code = 1
	}
	if err := member.Leave(500 * time.Millisecond); err != nil {
		logger.Error(err, "Leave")
	}
	// The others dropped this node on the Leave message; give them a moment
	// to start announcing before this node stops answering.
	time.Sleep(50 * time.Millisecond)
	cancelRun()
	<-done
	member.Shutdown()
	ann.Close()
	return code
}

// proxyServes asks the node's service proxy whether it forwards to a
// local endpoint of a Local Service: kube-proxy (and the proxies that
// replace it) answer on the Service's healthCheckNodePort with 200 when
// they have a local endpoint programmed and 503 when not, which is how
// cloud load balancers pick nodes. Only a 503 counts as "not yet": no
// answer (another proxy, a firewall) must not hold an address back.
func proxyServes(nodeIP string) func(context.Context, *corev1.Service) bool {
	client := &http.Client{Timeout: 250 * time.Millisecond}
	return func(ctx context.Context, svc *corev1.Service) bool {
		port := svc.Spec.HealthCheckNodePort
		if port == 0 || nodeIP == "" {
			return true
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(nodeIP, strconv.Itoa(int(port)))+"/", nil)
		if err != nil {
			return true
		}
		resp, err := client.Do(req)
		if err != nil {
			return true
		}
		resp.Body.Close()
		return resp.StatusCode != http.StatusServiceUnavailable
	}
}

// announcer adapts the layer-2 Announcer, whose SetOwned reports errors
// per interface, to the speaker's interface: an error is logged and the
// remaining interfaces keep answering.
type announcer struct {
	a      *layer2.Announcer
	logger klog.Logger
}

func (a announcer) SetOwned(owned map[netip.Addr][]string) {
	if err := a.a.SetOwned(owned); err != nil {
		a.logger.Error(err, "Updating announced addresses")
	}
}

// SetWatched and Reannounce let the speaker settle a split brain with
// another speaker without flapping.
func (a announcer) SetWatched(ips []netip.Addr) { a.a.SetWatched(ips) }
func (a announcer) Reannounce(ip netip.Addr)    { a.a.Reannounce(ip) }

// SetDraining lets the responders end a handover's drain themselves.
func (a announcer) SetDraining(drains map[netip.Addr][]net.HardwareAddr) { a.a.SetDraining(drains) }

// SetRefresh applies the pools' own refresh-interval.
func (a announcer) SetRefresh(intervals map[netip.Addr]time.Duration) { a.a.SetRefresh(intervals) }

// Recover acts on another speaker's report that ip goes unanswered.
func (a announcer) Recover(ip netip.Addr) error { return a.a.Recover(ip) }

// checkLAN asks the LAN who answers for ip on the first of ifaces (nil:
// every interface this node answers on) that can ask for ip's family.
func checkLAN(ann *layer2.Announcer) func(context.Context, netip.Addr, []string) ([]net.HardwareAddr, error) {
	return func(ctx context.Context, ip netip.Addr, ifaces []string) ([]net.HardwareAddr, error) {
		var errs []error
		for _, ifi := range ann.Interfaces() {
			if len(ifaces) > 0 && !slices.Contains(ifaces, ifi.Name) {
				continue
			}
			macs, err := ann.Check(ctx, ip, ifi.Name)
			if err == nil {
				return macs, nil
			}
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			return nil, fmt.Errorf("no interface to check %s on", ip)
		}
		return nil, errors.Join(errs...)
	}
}

// Probe lets the speaker check that nobody on the LAN uses a new address
// before its first announcement (RFC 5227, IPv6 DAD).
func (a announcer) Probe(ctx context.Context, ip netip.Addr, ifaces []string) ([]net.HardwareAddr, error) {
	return a.a.Probe(ctx, ip, ifaces)
}

// addresses picks this speaker's memberlist address and its peers.
func addresses(ctx context.Context, client kubernetes.Interface, node, bind, peers string, port int) (string, []string, error) {
	var nodeIPs map[string]string
	if bind == "" || peers == "" {
		var err error
		nodeIPs, err = internalIPs(ctx, client)
		if err != nil {
			return "", nil, err
		}
	}
	if bind == "" {
		bind = nodeIPs[node]
		if bind == "" {
			return "", nil, fmt.Errorf("node %q has no InternalIP; pass --bind-addr", node)
		}
	}
	var list []string
	if peers != "" {
		list = splitList(peers)
	} else {
		for n, ip := range nodeIPs {
			if n != node {
				list = append(list, net.JoinHostPort(ip, strconv.Itoa(port)))
			}
		}
		slices.Sort(list)
	}
	return bind, list, nil
}

func internalIPs(ctx context.Context, client kubernetes.Interface) (map[string]string, error) {
	for {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			out := map[string]string{}
			for _, n := range nodes.Items {
				for _, a := range n.Status.Addresses {
					if a.Type == corev1.NodeInternalIP && out[n.Name] == "" {
						out[n.Name] = a.Address
					}
				}
			}
			return out, nil
		}
		klog.FromContext(ctx).Info("Waiting for the API server to list Nodes", "err", err.Error())
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func ifaceMACs(ifis []net.Interface) []net.HardwareAddr {
	out := make([]net.HardwareAddr, len(ifis))
	for i, ifi := range ifis {
		out[i] = ifi.HardwareAddr
	}
	return out
}

func ifaceNames(ifis []net.Interface) []string {
	out := make([]string, len(ifis))
	for i, ifi := range ifis {
		out[i] = ifi.Name
	}
	return out
}

// sameInterfaces reports whether a and b name the same links: a link
// deleted and created again under its name has a new index.
func sameInterfaces(a, b []net.Interface) bool {
	return slices.EqualFunc(a, b, func(x, y net.Interface) bool {
		return x.Name == y.Name && x.Index == y.Index && x.HardwareAddr.String() == y.HardwareAddr.String()
	})
}

func splitList(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// registerLayer2 exports the announcer's packet counters.
func registerLayer2(reg *prometheus.Registry, ann *layer2.Announcer) {
	type field struct {
		name, help string
		get        func(layer2.FamilyStats) uint64
	}
	fields := []field{
		{"requests_total", "ARP requests / Neighbor Solicitations received.", func(s layer2.FamilyStats) uint64 { return s.Requests }},
		{"replies_total", "ARP replies / solicited Neighbor Advertisements sent.", func(s layer2.FamilyStats) uint64 { return s.Replies }},
		{"gratuitous_total", "Gratuitous ARP / unsolicited NA frames sent on gaining an address.", func(s layer2.FamilyStats) uint64 { return s.Gratuitous }},
		{"refreshes_total", "Gratuitous ARP / unsolicited NA frames sent again for addresses already owned (--refresh-interval).", func(s layer2.FamilyStats) uint64 { return s.Refreshes }},
		{"malformed_total", "Frames dropped as malformed.", func(s layer2.FamilyStats) uint64 { return s.Malformed }},
		{"send_errors_total", "Frames the socket refused to send.", func(s layer2.FamilyStats) uint64 { return s.SendErrors }},
		{"conflicts_total", "Frames in which another MAC claimed an address this node announces.", func(s layer2.FamilyStats) uint64 { return s.Conflicts }},
		{"defences_total", "Gratuitous ARP / unsolicited NA frames sent to reclaim an address from such a claim.", func(s layer2.FamilyStats) uint64 { return s.Defences }},
		{"probes_total", "ARP probes and requests / Neighbor Solicitations sent to ask who holds an address (probes of new addresses, checks).", func(s layer2.FamilyStats) uint64 { return s.Probes }},
	}
	for _, f := range fields {
		for _, fam := range []string{"arp", "ndp"} {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "ironlb_speaker_" + f.name, Help: f.help, ConstLabels: prometheus.Labels{"protocol": fam},
			}, func() float64 {
				st := ann.Stats()
				if fam == "arp" {
					return float64(f.get(st.ARP))
				}
				return float64(f.get(st.NDP))
			}))
		}
	}
}

// serve runs an HTTP server on addr until ctx ends; an empty addr disables it.
func serve(ctx context.Context, addr, pattern string, h http.Handler) {
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.Handle(pattern, h)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			klog.FromContext(ctx).Error(err, "HTTP server failed", "addr", addr)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
}
