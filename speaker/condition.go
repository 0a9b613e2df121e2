package speaker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/api/service"
)

// The ironlb.io/Announced condition tells a user, in the Service's status,
// which node, interface and MAC announce its addresses, or why none does.
//
// One speaker writes it per Service: the elected owner of the Service's
// first ingress address, or, when that address has no owner, the first
// live speaker by name. Every speaker computes the same writer from the
// same election. It is written with server-side apply under one field
// manager (api.FieldManagerSpeaker) that owns only this condition: the
// controller's status.loadBalancer is never touched, and the condition of
// a Service that is no longer ours, or has no address any more, is removed
// by applying a status without it.
//
// Writes happen on their own goroutine (condWriter): the sync loop only
// records what it wants, so a failover never waits for the API server. A
// condition is written only when it differs from what the informer shows,
// and never twice in a row with the same content by one node, so two
// speakers whose views disagree for a moment (a split brain) write once
// each instead of flipping it back and forth; a membership change, which
// is what ends such a disagreement, allows a rewrite.

// condition is the wanted state of a Service's condition; a nil
// *condition removes it.
type condition struct {
	status  metav1.ConditionStatus
	reason  string
	message string
}

// foreignClaimFor is how long after the last claim by a host that is not a
// speaker an address counts as duplicated in the condition.
const foreignClaimFor = duplicateReportEvery

// announceCondition computes the condition of svc as seen by self, and
// whether self is the one that writes it. owners are the elected owners;
// members the live speakers; local describes the interfaces (names and
// MACs) this node announces ip on; foreign reports addresses claimed by a
// host that is not a speaker.
func announceCondition(self string, svc *corev1.Service, owners map[netip.Addr]string, members []string,
	local func(ip netip.Addr) (names, macs []string), foreign, conflict func(ip netip.Addr) string) (*condition, bool) {
	ips := service.IngressIPs(svc)
	if len(ips) == 0 {
		return nil, false
	}
	writer := owners[ips[0]]
	if writer == "" {
		sorted := slices.Sorted(slices.Values(members))
		if len(sorted) == 0 {
			return nil, false
		}
		writer = sorted[0]
	}
	if writer != self {
		return nil, false
	}
	var orphans []string
	var as []api.Announcement
	for _, ip := range ips {
		o := owners[ip]
		if o == "" {
			orphans = append(orphans, ip.String())
			continue
		}
		a := api.Announcement{IP: ip, Node: o}
		if o == self && local != nil {
			names, macs := local(ip)
			a.Interface, a.MAC = strings.Join(names, ","), strings.Join(macs, ",")
		}
		as = append(as, a)
	}
	if len(orphans) > 0 {
		return &condition{metav1.ConditionFalse, api.ReasonNoEligibleNode, fmt.Sprintf(
			"no live speaker may announce %s (%d speakers alive): check the pool's node-selectors, that the nodes are Ready and not labelled %s, and for externalTrafficPolicy Local that a ready endpoint runs on a node with a speaker",
			strings.Join(orphans, ", "), len(members), api.LabelExcludeFromLB)}, true
	}
	if conflict != nil {
		for _, ip := range ips {
			if owners[ip] != self {
				continue
			}
			if mac := conflict(ip); mac != "" {
				return &condition{metav1.ConditionFalse, api.ReasonAddressConflict, fmt.Sprintf(
					"address %s is in use on the LAN by MAC %s, which answered node %s's probe; no node announces it until that host releases it (ironlb probes again every 1-30 s); find the host with that MAC and remove the address from it, or give the Service another address",
					ip, mac, self)}, true
			}
		}
	}
	if foreign != nil {
		for _, ip := range ips {
			if owners[ip] != self {
				continue
			}
			if mac := foreign(ip); mac != "" {
				return &condition{metav1.ConditionFalse, api.ReasonDuplicateAnnouncer, fmt.Sprintf(
					"%s is announced by node %s, and also claimed by MAC %s, which is not an ironlb speaker; node %s defends it; find the host with that MAC and remove the address from it",
					ip, self, mac, self)}, true
			}
		}
	}
	return &condition{metav1.ConditionTrue, api.ReasonAnnounced, api.FormatAnnouncements(as)}, true
}

// currentCondition returns svc's ConditionAnnounced, if any.
func currentCondition(svc *corev1.Service) *metav1.Condition {
	return meta.FindStatusCondition(svc.Status.Conditions, api.ConditionAnnounced)
}

func sameCondition(cur *metav1.Condition, want *condition) bool {
	if cur == nil || want == nil {
		return cur == nil && want == nil
	}
	return cur.Status == want.status && cur.Reason == want.reason && cur.Message == want.message
}

// condWriter applies the conditions the sync loop wants, off the sync
// loop, retrying failures with backoff.
type condWriter struct {
	client  kubernetes.Interface
	node    string
	get     func(key types.NamespacedName) (*corev1.Service, error)
	queue   workqueue.TypedRateLimitingInterface[types.NamespacedName]
	metrics *Metrics

	mu      sync.Mutex
	want    map[types.NamespacedName]*condition
	written map[types.NamespacedName]*condition // last applied by this node
}

func newCondWriter(client kubernetes.Interface, node string, metrics *Metrics, get func(types.NamespacedName) (*corev1.Service, error)) *condWriter {
	return &condWriter{
		client: client, node: node, get: get, metrics: metrics,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "conditions"}),
		want:    map[types.NamespacedName]*condition{},
		written: map[types.NamespacedName]*condition{},
	}
}

// set records that svc should carry want (nil: no condition) and queues a
// write when the object does not show it. It never blocks.
func (w *condWriter) set(svc *corev1.Service, want *condition) {
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	cur := currentCondition(svc)
	w.mu.Lock()
	defer w.mu.Unlock()
	if sameCondition(cur, want) {
		// Already there (maybe written by another node): nothing to do,
		// and a later change must be written even if it repeats an
		// older write of this node.
		delete(w.want, key)
		delete(w.written, key)
		return
	}
	if last, ok := w.written[key]; ok && equalCond(last, want) {
		return
	}
	w.want[key] = want
	w.queue.Add(key)
}

// forget drops what this node last wrote, so that a condition another
// node overwrote is rewritten when this node still disagrees; called on a
// membership change, which is what settles a disagreement.
func (w *condWriter) forget() {
	w.mu.Lock()
	clear(w.written)
	w.mu.Unlock()
}

func equalCond(a, b *condition) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func (w *condWriter) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		w.queue.ShutDown()
	}()
	for {
		key, quit := w.queue.Get()
		if quit {
			return
		}
		err := w.apply(ctx, key)
		w.queue.Done(key)
		if err != nil {
			klog.FromContext(ctx).Error(err, "Cannot write the Service's announcement condition; retrying", "service", key, "condition", api.ConditionAnnounced)
			w.queue.AddRateLimited(key)
			continue
		}
		w.queue.Forget(key)
	}
}

// apply writes key's wanted condition with server-side apply.
func (w *condWriter) apply(ctx context.Context, key types.NamespacedName) error {
	w.mu.Lock()
	want, ok := w.want[key]
	w.mu.Unlock()
	if !ok {
		return nil
	}
	svc, err := w.get(key)
	if apierrors.IsNotFound(err) {
		w.mu.Lock()
		delete(w.want, key)
		w.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	cur := currentCondition(svc)
	if sameCondition(cur, want) {
		w.mu.Lock()
		delete(w.want, key)
		w.mu.Unlock()
		return nil
	}
	status := corev1ac.ServiceStatus()
	if want != nil {
		// The transition time moves only when the status does, as for
		// every Kubernetes condition.
		since := metav1.Now()
		if cur != nil && cur.Status == want.status {
			since = cur.LastTransitionTime
		}
		status.WithConditions(metav1ac.Condition().
			WithType(api.ConditionAnnounced).WithStatus(want.status).
			WithReason(want.reason).WithMessage(want.message).
			WithObservedGeneration(svc.Generation).WithLastTransitionTime(since))
	}
	ac := corev1ac.Service(key.Name, key.Namespace).WithStatus(status)
	_, err = w.client.CoreV1().Services(key.Namespace).ApplyStatus(ctx, ac, metav1.ApplyOptions{FieldManager: api.FieldManagerSpeaker, Force: true})
	if apierrors.IsNotFound(err) {
		err = nil
	} else if err != nil {
		return fmt.Errorf("applying condition %s to Service %s: %w", api.ConditionAnnounced, key, err)
	}
	w.metrics.conditionWrites.Inc()
	klog.FromContext(ctx).V(2).Info("Wrote the announcement condition", "service", key, "status", func() string {
		if want == nil {
			return "removed"
		}
		return string(want.status) + " " + want.reason + ": " + want.message
	}())
	w.mu.Lock()
	if cur := w.want[key]; equalCond(cur, want) {
		delete(w.want, key)
	}
	w.written[key] = want
	w.mu.Unlock()
	return nil
}

// localInterfaces returns, for the condition, the names and MACs of this
// node's interfaces that ip is announced on.
func localInterfaces(all []net.Interface, allowed []string) (names, macs []string) {
	for _, ifi := range all {
		if len(allowed) > 0 && !slices.Contains(allowed, ifi.Name) {
			continue
		}
		names = append(names, ifi.Name)
		macs = append(macs, ifi.HardwareAddr.String())
	}
	return names, macs
}
