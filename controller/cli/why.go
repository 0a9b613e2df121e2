package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/api/service"
	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/controller"
)

// WhyReport explains a Service's state.
type WhyReport struct {
	Namespace string   `json:"namespace"`
	Service   string   `json:"service"`
	Addresses []string `json:"addresses,omitempty"`
	// Announced is the ironlb.io/Announced condition's status, "Event"
	// when only a nodeAssigned Event says so, or "" when nothing does.
	Announced string `json:"announced,omitempty"`
	// Refused is the reason of the controller's ironlb.io/Allocated
	// condition (such as PoolExhausted), "Event" when only an
	// AllocationFailed Event says why, or "" when nothing does.
	Refused string `json:"refused,omitempty"`
	// Explanation is one paragraph for a person.
	Explanation string `json:"explanation"`
}

// reasonText explains the reasons of a False ironlb.io/Announced condition.
var reasonText = map[string]string{
	api.ReasonNoEligibleNode: "no live speaker may announce it: the pool's node-selectors match no Ready node with a running speaker, " +
		"every such node is NotReady, NetworkUnavailable or labelled " + api.LabelExcludeFromLB +
		", or, with externalTrafficPolicy: Local, no node has a ready endpoint",
	api.ReasonAddressConflict: "another host on the LAN answered the probe for the address, so ironlb does not announce it until that host lets it go; " +
		"find the host by the MAC in the message and remove the address there",
	api.ReasonDuplicateAnnouncer: "another MAC keeps claiming the address while ironlb announces it, so clients may reach the wrong host; " +
		"find the host by the MAC in the message and remove the address there",
}

// Why prints, in one paragraph, why the Service has no address or is not
// announced, or that ironlb sees nothing wrong.
func Why(ctx context.Context, c *Clients, o Options, name string) error {
	svc, err := c.Kube.CoreV1().Services(o.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("Service %s/%s not found", o.Namespace, name)
	}
	if err != nil {
		return err
	}
	rep := WhyReport{Namespace: svc.Namespace, Service: svc.Name}
	for _, ip := range service.IngressIPs(svc) {
		rep.Addresses = append(rep.Addresses, ip.String())
	}
	var s []string
	say := func(format string, args ...any) { s = append(s, fmt.Sprintf(format, args...)) }
	ref := svc.Namespace + "/" + svc.Name

	switch {
	case svc.Spec.Type != corev1.ServiceTypeLoadBalancer:
		say("Service %s is of type %s: ironlb gives addresses only to Services of type LoadBalancer; set spec.type: LoadBalancer if it should have one.", ref, or(string(svc.Spec.Type), "ClusterIP"))
	case !service.Ours(svc, o.LBClass):
		say("Service %s has spec.loadBalancerClass %s, but ironlb handles only Services %s, so it is left to another load balancer implementation; remove the class (it cannot be changed on an existing Service: recreate it) or run ironlb with --lb-class=%s.",
			ref, classOf(svc), ourClassText(o.LBClass), classOf(svc))
	default:
		events, err := serviceEvents(ctx, c, svc.Namespace)
		if err != nil {
			return err
		}
		es := forService(events[ref], svc)
		ps := loadConfig(ctx, c, &o)
		if len(rep.Addresses) == 0 {
			var refused []string
			refused, rep.Refused = o.whyNoAddress(ctx, c, svc, es, ps)
			s = append(s, refused...)
		} else {
			s, rep.Announced, rep.Refused = o.whyAddress(svc, es, ps)
		}
	}
	rep.Explanation = strings.Join(s, " ")
	if done, err := o.printStructured(rep); done {
		return err
	}
	_, err = fmt.Fprintln(o.Out, rep.Explanation)
	return err
}

func ourClassText(class string) string {
	if class == "" {
		return "without a class (this check assumes the controller's default --lb-class; pass --lb-class if yours differs)"
	}
	return fmt.Sprintf("with class %q", class)
}

func (o *Options) ago(e *corev1.Event) string {
	return duration.HumanDuration(o.now().Sub(eventTime(e))) + " ago"
}

// refusal describes the controller's ironlb.io/Allocated condition, which
// says why it refuses the Service for as long as it does (Events expire
// after an hour; the condition stays).
func (o *Options) refusal(cond *metav1.Condition) string {
	return fmt.Sprintf("The controller refuses its request (condition %s is %s since %s ago, reason %s): %s.", api.ConditionAllocated, cond.Status,
		duration.HumanDuration(o.now().Sub(cond.LastTransitionTime.Time)), cond.Reason, strings.TrimSuffix(cond.Message, "."))
}

// whyNoAddress explains a Service without an address, and returns the
// reason it is refused (WhyReport.Refused).
func (o *Options) whyNoAddress(ctx context.Context, c *Clients, svc *corev1.Service, es []corev1.Event, ps poolsState) ([]string, string) {
	var s []string
	say := func(format string, args ...any) { s = append(s, fmt.Sprintf(format, args...)) }
	say("Service %s/%s has no address.", svc.Namespace, svc.Name)
	failed := newest(es, api.EventAllocationFailed)
	allocated := newest(es, api.EventIPAllocated)
	refused := ""
	switch cond := serviceCondition(svc, api.ConditionAllocated); {
	case cond != nil && cond.Status == metav1.ConditionFalse:
		refused = cond.Reason
		say("%s", o.refusal(cond))
	case failed != nil && (allocated == nil || !eventTime(allocated).After(eventTime(failed))):
		refused = "Event"
		say("The controller's last word, %s (%s): %s.", o.ago(failed), failed.Reason, strings.TrimSuffix(failed.Message, "."))
	case allocated != nil:
		say("The controller allocated an address %s (%s: %s), but the status holds none: it was released since, or the status write failed (the controller retries).", o.ago(allocated), allocated.Reason, strings.TrimSuffix(allocated.Message, "."))
	default:
		say("The controller has written no Event about it: check that the controller runs (kubectl -n %s get pods) and that its --lb-class matches the Service.", o.IronlbNamespace)
	}
	if ps.Config == nil {
		say("Also, %s.", ps.Problem)
	} else {
		pool := poolAnnotation(svc)
		switch {
		case len(ps.Config.Pools) == 0:
			say("The ConfigMap %s/%s defines no address pools.", o.IronlbNamespace, o.ConfigName)
		case pool != "":
			if p, ok := ps.Config.Pool(pool); !ok {
				say("It asks for pool %q, which the ConfigMap %s/%s does not define.", pool, o.IronlbNamespace, o.ConfigName)
			} else if !p.Allows(svc.Namespace) {
				say("It asks for pool %q, which is open only to namespaces %s.", pool, strings.Join(p.Namespaces, ", "))
			}
		default:
			if req, err := controller.NewRequest(svc); err == nil && len(req.IPs) == 0 &&
				!slices.ContainsFunc(ps.Config.Pools, func(p config.Pool) bool { return p.AutoAssign && p.Allows(svc.Namespace) }) {
				say("No pool is auto-assign and open to namespace %s, so the Service must name a pool (annotation %s) or an address (%s).", svc.Namespace, api.AnnotationAddressPool, api.AnnotationLoadBalancerIPs)
			}
		}
	}
	if rej := o.configRejected(ctx, c); rej != "" {
		say("%s", rej)
	}
	return s, refused
}

// whyAddress explains a Service that has addresses, and returns the
// status of its ironlb.io/Announced condition (WhyReport.Announced) and
// the reason of its ironlb.io/Allocated condition (WhyReport.Refused).
func (o *Options) whyAddress(svc *corev1.Service, es []corev1.Event, ps poolsState) ([]string, string, string) {
	var s []string
	say := func(format string, args ...any) { s = append(s, fmt.Sprintf(format, args...)) }
	ips := service.IngressIPs(svc)
	addrs := make([]string, len(ips))
	for i, ip := range ips {
		addrs[i] = ip.String()
	}
	say("Service %s/%s has %s.", svc.Namespace, svc.Name, plural(len(addrs), "address", "addresses")+" "+strings.Join(addrs, ", "))
	// It keeps them while refused (an unreadable annotation, a requested
	// address in use) or while no pool covers them.
	refused := ""
	if cond := serviceCondition(svc, api.ConditionAllocated); cond != nil && cond.Status == metav1.ConditionFalse {
		refused = cond.Reason
		say("%s", o.refusal(cond))
	}
	announced := ""
	cond := serviceCondition(svc, api.ConditionAnnounced)
	switch {
	case cond != nil && cond.Status == metav1.ConditionTrue:
		announced = string(cond.Status)
		say("It is announced (condition %s since %s ago): %s.", api.ConditionAnnounced, duration.HumanDuration(o.now().Sub(cond.LastTransitionTime.Time)), cond.Message)
	case cond != nil:
		announced = string(cond.Status)
		why := reasonText[cond.Reason]
		if why == "" {
			why = "reason " + cond.Reason
		}
		say("It is not announced (condition %s is %s since %s ago, reason %s): %s.", api.ConditionAnnounced, cond.Status,
			duration.HumanDuration(o.now().Sub(cond.LastTransitionTime.Time)), cond.Reason, why)
		if cond.Message != "" {
			say("The speaker says: %s.", strings.TrimSuffix(cond.Message, "."))
		}
	default:
		if node, ok := newestAssigned(es); ok {
			announced = "Event"
			e := newest(es, api.EventNodeAssigned)
			say("The speakers write no %s condition on it; their newest nodeAssigned Event (%s) says node %s announces it.", api.ConditionAnnounced, o.ago(e), node)
		} else {
			say("No speaker has reported announcing it (no %s condition, no nodeAssigned Event): check that the speaker pods run and are Ready (kubectl -n %s get pods) and read their logs.", api.ConditionAnnounced, o.IronlbNamespace)
		}
	}
	if w := newest(es, api.EventDuplicateAnnouncer, api.EventAddressConflict, api.EventWrongAnnouncer, api.EventNotAnswering); w != nil {
		say("The newest warning from the speakers, %s (%s): %s.", o.ago(w), w.Reason, strings.TrimSuffix(w.Message, "."))
	}
	if alloc := allocatorFor(ps); alloc != nil {
		for _, ip := range ips {
			if _, ok := alloc.PoolOf(ip); !ok {
				say("Address %s is outside every pool of the ConfigMap %s/%s; the controller keeps it rather than take it away, but a new Service could not get it.", ip, o.IronlbNamespace, o.ConfigName)
			}
		}
	} else if ps.Problem != "" {
		say("Also, %s.", ps.Problem)
	}
	if announced == string(metav1.ConditionTrue) && len(s) == 2 {
		say("ironlb sees nothing wrong; if clients cannot reach it, check that they are on the announcing node's LAN and that kube-proxy forwards the Service's ports on that node.")
	}
	return s, announced, refused
}

// configRejected describes the newest ConfigRejected Event on ironlb's
// ConfigMap when it is newer than the newest ConfigLoaded.
func (o *Options) configRejected(ctx context.Context, c *Clients) string {
	list, err := c.Kube.CoreV1().Events(o.IronlbNamespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.AndSelectors(
			fields.OneTermEqualSelector("involvedObject.kind", "ConfigMap"),
			fields.OneTermEqualSelector("involvedObject.name", o.ConfigName)).String(),
	})
	if err != nil {
		return ""
	}
	es := list.Items
	slices.SortStableFunc(es, func(a, b corev1.Event) int { return eventTime(&a).Compare(eventTime(&b)) })
	rej := newest(es, api.EventConfigRejected)
	loaded := newest(es, api.EventConfigLoaded)
	if rej == nil || loaded != nil && eventTime(loaded).After(eventTime(rej)) {
		return ""
	}
	msg, _, _ := strings.Cut(rej.Message, "\n")
	return fmt.Sprintf("The controller rejected the ConfigMap %s/%s %s and keeps the last config it accepted: %s.", o.IronlbNamespace, o.ConfigName, o.ago(rej), strings.TrimSuffix(msg, "."))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
