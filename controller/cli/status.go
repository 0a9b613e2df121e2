package cli

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/api/service"
	"github.com/ironlb/ironlb/ipam"
)

// Where an announcement was read from.
const (
	SourceCondition = "condition"
	SourceEvent     = "event"
	SourceNone      = "none"
)

// AddressStatus is one address of a Service and who announces it.
type AddressStatus struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	// Address is empty while the Service waits for one.
	Address string `json:"address,omitempty"`
	// Pool holds the address: the ConfigMap's pool whose ranges contain
	// it, else the Service's pool annotation.
	Pool string `json:"pool,omitempty"`
	// Node, Interface and MAC announce the address; empty when unknown.
	Node      string `json:"node,omitempty"`
	Interface string `json:"interface,omitempty"`
	MAC       string `json:"mac,omitempty"`
	// Announced is "True", "False" or "Unknown"; Reason says why not.
	Announced string `json:"announced"`
	Reason    string `json:"reason,omitempty"`
	// Source is where Node came from: the ironlb.io/Announced condition,
	// the newest nodeAssigned Event, or none.
	Source string `json:"source"`
	// LastMove is the last change of announcing node seen in the
	// Service's nodeAssigned Events.
	LastMove *Move `json:"lastMove,omitempty"`
}

// Move is a change of the node announcing a Service, read from two
// nodeAssigned Events: the newest one and the newest older one naming
// another node. The API records when the new node announced, not when
// the old one stopped, so the time the move took is not known here (the
// speakers' ironlb_failover_seconds histogram measures it).
type Move struct {
	From string    `json:"from"`
	To   string    `json:"to"`
	At   time.Time `json:"at"`
}

// Status prints each LoadBalancer Service ironlb handles (only name when
// it is not empty), its addresses, pool and announcer.
func Status(ctx context.Context, c *Clients, o Options, name string) error {
	ns := o.svcNamespace()
	var svcs []corev1.Service
	if name != "" {
		svc, err := c.Kube.CoreV1().Services(o.Namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("Service %s/%s not found", o.Namespace, name)
		}
		if err != nil {
			return err
		}
		if !service.Ours(svc, o.LBClass) {
			return fmt.Errorf("Service %s/%s is not handled by ironlb (type %s, loadBalancerClass %s); `kubectl ironlb why %s` says more", svc.Namespace, svc.Name, svc.Spec.Type, classOf(svc), name)
		}
		svcs = []corev1.Service{*svc}
		ns = o.Namespace
	} else {
		var err error
		if svcs, err = services(ctx, c, ns, o.LBClass); err != nil {
			return err
		}
	}
	events, err := serviceEvents(ctx, c, ns)
	if err != nil {
		return err
	}
	alloc := allocatorFor(loadConfig(ctx, c, &o))
	var rows []AddressStatus
	for i := range svcs {
		rows = append(rows, addressStatus(&svcs[i], forService(events[svcs[i].Namespace+"/"+svcs[i].Name], &svcs[i]), alloc)...)
	}
	if done, err := o.printStructured(rows); done {
		return err
	}
	if len(rows) == 0 {
		where := "namespace " + o.Namespace
		if o.AllNamespaces {
			where = "any namespace"
		}
		_, err := fmt.Fprintf(o.ErrOut, "No LoadBalancer Services handled by ironlb in %s.\n", where)
		return err
	}
	w := printers.GetNewTabWriter(o.Out)
	if o.AllNamespaces {
		fmt.Fprint(w, "NAMESPACE\t")
	}
	fmt.Fprintln(w, "NAME\tADDRESS\tPOOL\tNODE\tINTERFACE\tMAC\tSOURCE\tLAST MOVE")
	for _, r := range rows {
		if o.AllNamespaces {
			fmt.Fprintf(w, "%s\t", r.Namespace)
		}
		node := dash(r.Node)
		if r.Announced != string(metav1.ConditionTrue) && r.Reason != "" {
			node = "<" + r.Reason + ">"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Service, or(r.Address, "<pending>"), dash(r.Pool), node,
			dash(r.Interface), dash(r.MAC), r.Source, o.moveText(r.LastMove))
	}
	return w.Flush()
}

func (o *Options) moveText(m *Move) string {
	if m == nil {
		return "-"
	}
	return fmt.Sprintf("%s->%s %s ago", m.From, m.To, duration.HumanDuration(o.now().Sub(m.At)))
}

// allocatorFor rebuilds the pools from the config, for telling which pool
// an address is in. It is nil without a valid config.
func allocatorFor(ps poolsState) *ipam.Allocator {
	if ps.Config == nil {
		return nil
	}
	a := ipam.New()
	if _, err := a.SetPools(ps.Config.IPAM()); err != nil {
		return nil
	}
	return a
}

func addressStatus(svc *corev1.Service, events []corev1.Event, alloc *ipam.Allocator) []AddressStatus {
	base := AddressStatus{Namespace: svc.Namespace, Service: svc.Name, Announced: string(metav1.ConditionUnknown), Source: SourceNone}
	base.LastMove = lastMove(events)

	ips := service.IngressIPs(svc)
	byIP := map[netip.Addr]api.Announcement{}
	if cond := serviceCondition(svc, api.ConditionAnnounced); cond != nil {
		base.Source = SourceCondition
		base.Announced = string(cond.Status)
		if cond.Status == metav1.ConditionTrue {
			as, err := api.ParseAnnouncements(cond.Message)
			if err != nil {
				base.Announced, base.Reason = string(metav1.ConditionUnknown), "UnreadableCondition"
			}
			for _, a := range as {
				byIP[a.IP] = a
			}
		} else {
			base.Reason = cond.Reason
		}
	} else if node, ok := newestAssigned(events); ok {
		// Without the condition, the speaker's newest nodeAssigned Event
		// names the node announcing the Service (every address of a
		// Service follows its first address's owner).
		base.Source = SourceEvent
		base.Announced = string(metav1.ConditionTrue)
		for _, ip := range ips {
			byIP[ip] = api.Announcement{IP: ip, Node: node}
		}
	}

	if len(ips) == 0 {
		r := base
		r.Pool = poolAnnotation(svc)
		return []AddressStatus{r}
	}
	out := make([]AddressStatus, 0, len(ips))
	for _, ip := range ips {
		r := base
		r.Address = ip.String()
		r.Pool = poolOf(alloc, ip, svc)
		if a, ok := byIP[ip]; ok {
			r.Node, r.Interface, r.MAC = a.Node, a.Interface, a.MAC
		} else if base.Source == SourceCondition && base.Announced == string(metav1.ConditionTrue) {
			// The condition speaks for other addresses only: this one is
			// newer than the speaker's last write.
			r.Announced, r.Reason = string(metav1.ConditionUnknown), "NotInCondition"
		}
		out = append(out, r)
	}
	return out
}

func poolOf(alloc *ipam.Allocator, ip netip.Addr, svc *corev1.Service) string {
	if alloc != nil {
		if p, ok := alloc.PoolOf(ip); ok {
			return p
		}
		return "<outside every pool>"
	}
	return poolAnnotation(svc)
}

func poolAnnotation(svc *corev1.Service) string {
	if p, ok := svc.Annotations[api.AnnotationAddressPool]; ok {
		return p
	}
	return svc.Annotations[api.MetalLBAnnotationAddressPool]
}

// newestAssigned is the node of the newest nodeAssigned Event.
func newestAssigned(events []corev1.Event) (string, bool) {
	for i := len(events) - 1; i >= 0; i-- {
		if n, ok := assignedNode(&events[i]); ok {
			return n, true
		}
	}
	return "", false
}

// lastMove finds the newest nodeAssigned Event and the newest older one
// naming another node. The recorders aggregate repeats of one message, so
// each Event object stands for one node and carries when it last became
// the announcer.
func lastMove(events []corev1.Event) *Move {
	var to string
	var at time.Time
	for i := len(events) - 1; i >= 0; i-- {
		n, ok := assignedNode(&events[i])
		if !ok {
			continue
		}
		if to == "" {
			to, at = n, eventTime(&events[i])
			continue
		}
		if n != to {
			return &Move{From: n, To: to, At: at}
		}
	}
	return nil
}

func classOf(svc *corev1.Service) string {
	if svc.Spec.LoadBalancerClass == nil {
		return "<none>"
	}
	return *svc.Spec.LoadBalancerClass
}

func dash(s string) string { return or(s, "-") }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
