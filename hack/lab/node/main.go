// Command lab-node is the network lab's kube-proxy stand-in and backend. One
// runs in each node namespace of hack/lab.sh. It watches LoadBalancer
// Services (and EndpointSlices) through the API and, for every Service with
// an assigned ingress IP:
//
//   - serves HTTP on the node's own IPs at the Service's TCP NodePorts,
//     answering GET /health with "UP <node-name>\n";
//   - keeps an nftables table (inet ironlb_lab) whose PREROUTING nat chain
//     DNATs TCP to VIP:port to nodeIP:NodePort, for IPv4 and IPv6.
//
// For externalTrafficPolicy: Local it behaves like kube-proxy: only when an
// EndpointSlice of the Service lists a ready endpoint on this node does it
// forward and serve; otherwise traffic to VIP:port is dropped.
//
// The VIP is never assigned to an interface, so the node's kernel never
// answers ARP/NDP for it; only the speaker does.
//
// Usage (as hack/lab.sh runs it, inside the node's network namespace):
//
//	lab-node --node-name n1 --kubeconfig .cache/lab/kubeconfig \
//	    --node-ip 198.51.100.11,2001:db8:100::11
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/ironlb/ironlb/api/kubeclient"
)

type ipList []netip.Addr

func (l *ipList) String() string {
	s := make([]string, len(*l))
	for i, a := range *l {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func (l *ipList) Set(v string) error {
	for f := range strings.SplitSeq(v, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return err
		}
		*l = append(*l, a.Unmap())
	}
	return nil
}

func main() {
	var nodeIPs ipList
	nodeName := flag.String("node-name", "", "this node's name (Node object and EndpointSlice nodeName)")
	kubeconfig := flag.String("kubeconfig", "", "path to a kubeconfig")
	flag.Var(&nodeIPs, "node-ip", "the node's own IPs (comma-separated or repeated; at most one per family)")
	nftBin := flag.String("nft", "nft", "nft binary")
	table := flag.String("table", "ironlb_lab", "name of the nftables table (family inet) this program owns")
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("lab-node: ")
	if *nodeName == "" || *kubeconfig == "" || len(nodeIPs) == 0 {
		log.Fatal("--node-name, --kubeconfig and --node-ip are required")
	}
	cfg, err := kubeclient.Config(*kubeconfig, "ironlb-lab-node")
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Fatalf("client: %v", err)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	factory := informers.NewSharedInformerFactory(client, 0)
	svcs := factory.Core().V1().Services()
	epSlices := factory.Discovery().V1().EndpointSlices()
	kick := make(chan struct{}, 1)
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { trigger(kick) },
		UpdateFunc: func(any, any) { trigger(kick) },
		DeleteFunc: func(any) { trigger(kick) },
	}
	if _, err := svcs.Informer().AddEventHandler(notify); err != nil {
		log.Fatal(err)
	}
	if _, err := epSlices.Informer().AddEventHandler(notify); err != nil {
		log.Fatal(err)
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			log.Fatalf("cache for %v did not sync", typ)
		}
	}

	p := &proxy{
		node: *nodeName, nodeIPs: nodeIPs, nft: *nftBin, table: *table,
		svcs: svcs.Lister(), slices: epSlices.Lister(),
		servers: map[netip.AddrPort]*backend{},
	}
	log.Printf("node %s (%s) watching LoadBalancer Services", p.node, nodeIPs.String())
	// A periodic pass retries listeners or rules that failed.
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	trigger(kick)
	for {
		select {
		case <-ctx.Done():
			p.shutdown()
			return
		case <-kick:
		case <-tick.C:
		}
		p.reconcile()
	}
}

func trigger(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

type proxy struct {
	node    string
	nodeIPs []netip.Addr
	nft     string
	table   string
	svcs    corelisters.ServiceLister
	slices  discoverylisters.EndpointSliceLister

	ruleset string // last applied, "" before the first apply
	servers map[netip.AddrPort]*backend
}

type backend struct {
	srv  *http.Server
	desc string
}

// rule is one DNAT (or drop) line of the nat chain.
type rule struct {
	vip     netip.Addr
	port    int32
	target  netip.AddrPort // invalid for drop
	service string
}

func (r rule) String() string {
	fam := "ip"
	if r.vip.Is6() {
		fam = "ip6"
	}
	s := fmt.Sprintf("%s daddr %s tcp dport %d ", fam, r.vip, r.port)
	if r.target.IsValid() {
		s += fmt.Sprintf("dnat %s to %s", fam, r.target)
	} else {
		s += "drop"
	}
	return s + fmt.Sprintf(" comment %q", r.service)
}

func (p *proxy) nodeIP(family6 bool) (netip.Addr, bool) {
	for _, a := range p.nodeIPs {
		if a.Is6() == family6 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// hasLocalEndpoint: some EndpointSlice of svc lists a ready endpoint on
// this node (a nil ready condition counts as ready, as the API says).
func (p *proxy) hasLocalEndpoint(svc *corev1.Service) bool {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
	list, err := p.slices.EndpointSlices(svc.Namespace).List(sel)
	if err != nil {
		return false
	}
	for _, s := range list {
		for _, ep := range s.Endpoints {
			if ep.NodeName != nil && *ep.NodeName == p.node &&
				(ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				return true
			}
		}
	}
	return false
}

func (p *proxy) desired() ([]rule, map[netip.AddrPort]string) {
	var rules []rule
	listen := map[netip.AddrPort]string{}
	all, err := p.svcs.List(labels.Everything())
	if err != nil {
		log.Printf("list services: %v", err)
		return nil, nil
	}
	for _, svc := range all {
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		var vips []netip.Addr
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(in.IP); err == nil {
				vips = append(vips, a.Unmap())
			}
		}
		if len(vips) == 0 {
			continue
		}
		name := svc.Namespace + "/" + svc.Name
		local := svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal || p.hasLocalEndpoint(svc)
		for _, sp := range svc.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			if sp.NodePort == 0 {
				log.Printf("%s port %d has no NodePort; not forwarded", name, sp.Port)
				continue
			}
			for _, vip := range vips {
				nip, ok := p.nodeIP(vip.Is6())
				if !ok {
					continue
				}
				r := rule{vip: vip, port: sp.Port, service: name}
				if local {
					r.target = netip.AddrPortFrom(nip, uint16(sp.NodePort))
					listen[r.target] = name
				}
				rules = append(rules, r)
			}
		}
	}
	sort.Slice(rules, func(i, j int) bool {
		if c := rules[i].vip.Compare(rules[j].vip); c != 0 {
			return c < 0
		}
		return rules[i].port < rules[j].port
	})
	return rules, listen
}

func (p *proxy) reconcile() {
	rules, listen := p.desired()
	if listen == nil {
		return
	}
	// Listeners first, so a DNAT rule never points at a closed port.
	for ap, desc := range listen {
		if b, ok := p.servers[ap]; ok {
			b.desc = desc
			continue
		}
		b, err := p.serve(ap, desc)
		if err != nil {
			log.Printf("listen %s for %s: %v (retrying)", ap, desc, err)
			continue
		}
		p.servers[ap] = b
		log.Printf("serving %s on %s", desc, ap)
	}
	rs := p.render(rules)
	if rs != p.ruleset {
		if err := p.apply(rs); err != nil {
			log.Printf("nft: %v (retrying)", err)
		} else {
			p.ruleset = rs
			log.Printf("nftables: %d rule(s)", len(rules))
			for _, r := range rules {
				log.Printf("  %s", r)
			}
		}
	}
	for ap, b := range p.servers {
		if _, ok := listen[ap]; !ok {
			_ = b.srv.Close()
			delete(p.servers, ap)
			log.Printf("stopped serving %s on %s", b.desc, ap)
		}
	}
}

func (p *proxy) serve(ap netip.AddrPort, desc string) (*backend, error) {
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	body := "UP " + p.node + "\n"
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte(body))
	})
	b := &backend{desc: desc}
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("serve %s: %v", ap, err)
		}
	}()
	return b, nil
}

// render: the whole table, replaced atomically in one nft transaction
// (declare, delete, define).
func (p *proxy) render(rules []rule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n", p.table, p.table, p.table)
	b.WriteString("\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "\t\t%s\n", r)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func (p *proxy) apply(ruleset string) error {
	cmd := exec.Command(p.nft, "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

func (p *proxy) shutdown() {
	for _, b := range p.servers {
		_ = b.srv.Close()
	}
	if p.ruleset != "" {
		cmd := exec.Command(p.nft, "delete", "table", "inet", p.table)
		if out, err := cmd.CombinedOutput(); err != nil {
			log.Printf("nft delete table: %v: %s", err, bytes.TrimSpace(out))
		}
	}
	log.Print("stopped")
}
