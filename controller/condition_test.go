package controller

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/ipam"
)

var (
	then = metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	now  = metav1.NewTime(time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC))
)

const exhausted = "IPv4 address: pool p is exhausted"

func announced() metav1.Condition {
	return metav1.Condition{Type: api.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: api.ReasonAnnounced, Message: "198.51.100.1 by node a", LastTransitionTime: then}
}

func allocatedCond(reason, msg string, gen int64) metav1.Condition {
	return metav1.Condition{Type: api.ConditionAllocated, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: then}
}

// testSvc is a Service of generation 2 with the given ingress addresses and
// conditions.
func testSvc(ips []string, conds ...metav1.Condition) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", Generation: 2}}
	for _, ip := range ips {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, Ingress([]netip.Addr{netip.MustParseAddr(ip)})...)
	}
	svc.Status.Conditions = conds
	return svc
}

func ingressOf(ips ...string) []corev1.LoadBalancerIngress {
	var addrs []netip.Addr
	for _, ip := range ips {
		addrs = append(addrs, netip.MustParseAddr(ip))
	}
	return Ingress(addrs)
}

// The decision that keeps a restart silent: a failure the condition
// already states raises no Event and writes nothing; a new one raises one
// Event and writes the condition; success removes the condition in the
// write that assigns the addresses.
func TestPlanStatus(t *testing.T) {
	fail := &failure{reason: api.ReasonPoolExhausted, message: exhausted}
	newCond := allocatedCond(api.ReasonPoolExhausted, exhausted, 2)
	newCond.LastTransitionTime = now
	for _, tc := range []struct {
		name   string
		svc    *corev1.Service
		want   []corev1.LoadBalancerIngress
		fail   *failure
		fresh  bool
		plan   statusPlan
		patch  types.PatchType
		noWrit bool
	}{
		{name: "served at once: one ingress write, as without conditions",
			svc: testSvc(nil), want: ingressOf("198.51.100.1"),
			plan: statusPlan{setIngress: true, ingress: ingressOf("198.51.100.1")}, patch: types.MergePatchType},
		{name: "served, nothing changed",
			svc: testSvc([]string{"198.51.100.1"}, announced()), want: ingressOf("198.51.100.1"), noWrit: true},
		{name: "restart: the condition already says it, so no Event and no write",
			svc: testSvc(nil, announced(), allocatedCond(api.ReasonPoolExhausted, exhausted, 2)), fail: fail, fresh: true, noWrit: true},
		{name: "same failure reported already in this run",
			svc: testSvc(nil, allocatedCond(api.ReasonPoolExhausted, exhausted, 2)), fail: fail, noWrit: true},
		{name: "new failure: Event and condition",
			svc: testSvc(nil, announced()), fail: fail, fresh: true,
			plan: statusPlan{cond: &newCond, event: true}, patch: types.StrategicMergePatchType},
		{name: "failure already reported, informer behind the write: condition again, no second Event",
			svc: testSvc(nil), fail: fail,
			plan: statusPlan{cond: &newCond}, patch: types.StrategicMergePatchType},
		{name: "failure changed: Event, and the condition keeps its transition time",
			svc: testSvc(nil, allocatedCond(api.ReasonAddressInUse, "address 198.51.100.1 is in use by ns/b", 2)), fail: fail, fresh: true,
			plan: statusPlan{cond: ptrTo(allocatedCond(api.ReasonPoolExhausted, exhausted, 2)), event: true}, patch: types.StrategicMergePatchType},
		{name: "same failure, spec changed: observedGeneration follows, no Event",
			svc: testSvc(nil, allocatedCond(api.ReasonPoolExhausted, exhausted, 1)), fail: fail, fresh: true,
			plan: statusPlan{cond: ptrTo(allocatedCond(api.ReasonPoolExhausted, exhausted, 2))}, patch: types.StrategicMergePatchType},
		{name: "refused while holding an address: the address stays, the condition is added",
			svc: testSvc([]string{"198.51.100.1"}), want: ingressOf("198.51.100.1"), fail: fail, fresh: true,
			plan: statusPlan{ingress: ingressOf("198.51.100.1"), cond: &newCond, event: true}, patch: types.StrategicMergePatchType},
		{name: "served after a refusal: the assigning write removes the condition",
			svc: testSvc(nil, announced(), allocatedCond(api.ReasonPoolExhausted, exhausted, 2)), want: ingressOf("198.51.100.1"),
			plan: statusPlan{setIngress: true, ingress: ingressOf("198.51.100.1"), dropCond: true}, patch: types.StrategicMergePatchType},
		{name: "request fixed, address kept: the condition alone is removed",
			svc: testSvc([]string{"198.51.100.1"}, allocatedCond(api.ReasonInvalidRequest, "bad", 2)), want: ingressOf("198.51.100.1"),
			plan: statusPlan{ingress: ingressOf("198.51.100.1"), dropCond: true}, patch: types.StrategicMergePatchType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := planStatus(tc.svc, tc.want, tc.fail, tc.fresh, now)
			if tc.noWrit {
				if got.write() || got.event {
					t.Fatalf("plan writes %v, Event %v; want neither: %+v", got.write(), got.event, got)
				}
				return
			}
			if diff := cmp.Diff(tc.plan, got, cmp.AllowUnexported(statusPlan{})); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			pt, _, err := got.statusPatch()
			if err != nil || pt != tc.patch {
				t.Errorf("patch type %v (%v), want %v", pt, err, tc.patch)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

// The patches, applied as the API server does to a Service that carries
// the speakers' condition, change only what the plan says: the speakers'
// condition survives every one of them.
func TestStatusPatchKeepsOtherConditions(t *testing.T) {
	failed := allocatedCond(api.ReasonPoolExhausted, exhausted, 2)
	for _, tc := range []struct {
		name string
		svc  *corev1.Service
		plan statusPlan
		want corev1.ServiceStatus
	}{
		{"put the condition",
			testSvc(nil, announced()), statusPlan{cond: &failed},
			corev1.ServiceStatus{Conditions: []metav1.Condition{announced(), failed}}},
		{"replace the condition",
			testSvc(nil, allocatedCond(api.ReasonAddressInUse, "in use", 1), announced()), statusPlan{cond: &failed},
			corev1.ServiceStatus{Conditions: []metav1.Condition{failed, announced()}}},
		{"assign and remove the condition in one patch",
			testSvc(nil, announced(), failed), statusPlan{setIngress: true, ingress: ingressOf("198.51.100.1"), dropCond: true},
			corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: ingressOf("198.51.100.1")}, Conditions: []metav1.Condition{announced()}}},
		{"release and remove the condition",
			testSvc([]string{"198.51.100.1"}, failed, announced()), statusPlan{setIngress: true, dropCond: true},
			corev1.ServiceStatus{Conditions: []metav1.Condition{announced()}}},
		{"ingress only",
			testSvc([]string{"198.51.100.2"}, announced()), statusPlan{setIngress: true, ingress: ingressOf("198.51.100.1")},
			corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: ingressOf("198.51.100.1")}, Conditions: []metav1.Condition{announced()}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, patch, err := tc.plan.statusPatch()
			if err != nil {
				t.Fatal(err)
			}
			orig, err := json.Marshal(tc.svc)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			switch pt {
			case types.StrategicMergePatchType:
				out, err = strategicpatch.StrategicMergePatch(orig, patch, corev1.Service{})
			case types.MergePatchType:
				out, err = mergePatch(orig, patch)
			default:
				t.Fatalf("patch type %v", pt)
			}
			if err != nil {
				t.Fatalf("applying %s: %v", patch, err)
			}
			var got corev1.Service
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			// The order of conditions means nothing (a map-list keyed by type).
			byType := cmpopts.SortSlices(func(a, b metav1.Condition) bool { return a.Type < b.Type })
			if diff := cmp.Diff(tc.want, got.Status, byType); diff != "" {
				t.Errorf("status after %s patch %s (-want +got):\n%s", pt, patch, diff)
			}
		})
	}
}

// mergePatch applies an RFC 7386 JSON merge patch; the one the controller
// sends for ingress only touches status.loadBalancer.ingress, so a
// two-level merge is all it needs.
func mergePatch(orig, patch []byte) ([]byte, error) {
	var o, p map[string]any
	if err := json.Unmarshal(orig, &o); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, err
	}
	merge(o, p)
	return json.Marshal(o)
}

func merge(dst, src map[string]any) {
	for k, v := range src {
		sub, isMap := v.(map[string]any)
		switch {
		case v == nil:
			delete(dst, k)
		case isMap:
			d, ok := dst[k].(map[string]any)
			if !ok {
				d = map[string]any{}
				dst[k] = d
			}
			merge(d, sub)
		default:
			dst[k] = v
		}
	}
}

func TestReasonOf(t *testing.T) {
	addr := netip.MustParseAddr("198.51.100.1")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&ipam.Refusal{Family: ipam.IPv4, Err: &ipam.Error{Kind: ipam.ErrExhausted, Msg: "pool p is exhausted"}}, api.ReasonPoolExhausted},
		{&ipam.Refusal{Family: ipam.IPv4, Err: &ipam.InUseError{Addr: addr, Holder: "ns/b", Reason: "no sharing key"}}, api.ReasonAddressInUse},
		{&ipam.Refusal{Family: ipam.IPv4, Err: &ipam.InUseError{Addr: addr, Holder: "ns/b", Reason: "ports clash", Sharing: true}}, api.ReasonSharingConflict},
		{&ipam.Refusal{Family: ipam.IPv4, Err: ipam.ErrNoConfig}, api.ReasonNoConfig},
		{&ipam.RestoreError{Key: "ns/a", Addr: addr, Err: &ipam.Error{Kind: ipam.ErrNotInPool, Msg: "not in any pool"}}, api.ReasonAddressNotInPool},
		{fmt.Errorf("annotation %s: bad", api.AnnotationLoadBalancerIPs), api.ReasonInvalidRequest},
	} {
		if got := reasonOf(tc.err); got != tc.want {
			t.Errorf("reasonOf(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	// An unreadable request is InvalidRequest whatever its text wraps.
	if f := failureOf(ipam.ErrExhausted, true); f.reason != api.ReasonInvalidRequest {
		t.Errorf("bad request: reason %q", f.reason)
	}
}
