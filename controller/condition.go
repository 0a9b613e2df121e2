package controller

import (
	"encoding/json"
	"errors"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/ipam"
)

// The ironlb.io/Allocated condition (api.ConditionAllocated) keeps, in the
// Service's status, what the controller last said about a Service it
// refuses. The in-memory ledger forgets that on a restart; the condition
// does not, so a restarted controller that finds the same failure already
// written says nothing again: no Event, no status write.

// failure is the ConditionAllocated the controller wants on a Service; a
// nil *failure means none.
type failure struct {
	reason, message string
}

// messageLimit keeps a condition's message within the API server's limit
// (32768 bytes), so a long failure text cannot make the write fail.
const messageLimit = 32 * 1024

// failureOf turns a ledger refusal into the condition. badRequest is true
// when the Service's request could not be read (Ledger.Hold).
func failureOf(err error, badRequest bool) *failure {
	reason := api.ReasonInvalidRequest
	if !badRequest {
		reason = reasonOf(err)
	}
	return &failure{reason: reason, message: limit(err.Error())}
}

// pinnedFailure describes the addresses a Service keeps although no pool
// covers them (Result.Pinned): they stay, and are announced, until a
// config covers them again, but the user should know.
func pinnedFailure(why []error) *failure {
	if len(why) == 0 {
		return nil
	}
	msgs := make([]string, len(why))
	for i, err := range why {
		msgs[i] = err.Error() + "; it is kept until the config covers it again"
	}
	return &failure{reason: reasonOf(why[0]), message: limit(strings.Join(msgs, "; "))}
}

// reasonOf picks the condition reason for an allocator error by the
// sentinel it wraps.
func reasonOf(err error) string {
	for _, r := range []struct {
		kind   error
		reason string
	}{
		// ErrSharing is a kind of ErrInUse: test it first.
		{ipam.ErrSharing, api.ReasonSharingConflict},
		{ipam.ErrInUse, api.ReasonAddressInUse},
		{ipam.ErrExhausted, api.ReasonPoolExhausted},
		{ipam.ErrNotInPool, api.ReasonAddressNotInPool},
		{ipam.ErrWrongPool, api.ReasonAddressNotInPool},
		{ipam.ErrReserved, api.ReasonAddressReserved},
		{ipam.ErrUnknownPool, api.ReasonUnknownPool},
		{ipam.ErrNoPool, api.ReasonNoEligiblePool},
		{ipam.ErrNamespace, api.ReasonNoEligiblePool},
		{ipam.ErrNoConfig, api.ReasonNoConfig},
	} {
		if errors.Is(err, r.kind) {
			return r.reason
		}
	}
	return api.ReasonInvalidRequest
}

func limit(msg string) string {
	if len(msg) > messageLimit {
		return msg[:messageLimit-3] + "..."
	}
	return msg
}

// allocatedCondition returns svc's ConditionAllocated, if any.
func allocatedCondition(svc *corev1.Service) *metav1.Condition {
	return meta.FindStatusCondition(svc.Status.Conditions, api.ConditionAllocated)
}

// says reports whether cur already says f: the same refusal, which a
// user was told about when it was written.
func says(cur *metav1.Condition, f *failure) bool {
	return cur != nil && cur.Status == metav1.ConditionFalse && cur.Reason == f.reason && cur.Message == f.message
}

// statusPlan is what reconcile writes to a Service's status and says
// about it.
type statusPlan struct {
	// setIngress: status.loadBalancer.ingress becomes ingress.
	setIngress bool
	ingress    []corev1.LoadBalancerIngress
	// cond, when not nil, is put as ConditionAllocated; dropCond removes
	// it.
	cond     *metav1.Condition
	dropCond bool
	// event: the failure is news, so an AllocationFailed Event goes out.
	event bool
}

// write reports whether the plan changes the status.
func (p statusPlan) write() bool { return p.setIngress || p.cond != nil || p.dropCond }

// planStatus decides, from the Service as the informer shows it, the
// addresses it should have and the failure to show (nil: none), what to
// write and whether to raise an Event. fresh is false when this run of
// the controller already reported the same failure (Result.Report), so an
// informer that has not seen the last write yet causes no second Event.
// A failure the condition already states is not news either, whatever
// the ledger says: that is how a restart stays silent.
//
// The condition is removed in the write that assigns the addresses, so a
// Service served at once costs one write, as without the condition.
func planStatus(svc *corev1.Service, ingress []corev1.LoadBalancerIngress, want *failure, fresh bool, now metav1.Time) statusPlan {
	p := statusPlan{ingress: ingress, setIngress: !SameIngress(svc.Status.LoadBalancer.Ingress, ingress)}
	cur := allocatedCondition(svc)
	if want == nil {
		p.dropCond = cur != nil
		return p
	}
	same := says(cur, want)
	p.event = fresh && !same
	if same && cur.ObservedGeneration == svc.Generation {
		return p
	}
	// The transition time moves only when the status does, as for every
	// Kubernetes condition: it says since when the Service is refused.
	since := now
	if cur != nil && cur.Status == metav1.ConditionFalse {
		since = cur.LastTransitionTime
	}
	p.cond = &metav1.Condition{
		Type: api.ConditionAllocated, Status: metav1.ConditionFalse,
		Reason: want.reason, Message: want.message,
		ObservedGeneration: svc.Generation, LastTransitionTime: since,
	}
	return p
}

// statusPatch encodes the plan as one patch of the status subresource.
// Without a condition to put or remove it is the JSON merge patch of
// status.loadBalancer.ingress the controller always sent. With one, it is
// a strategic merge patch: status.conditions merges by type there, so the
// patch puts or deletes the controller's own condition and leaves every
// other one, the speakers' ironlb.io/Announced among them, as it is (a
// JSON merge patch would replace the whole list).
func (p statusPlan) statusPatch() (types.PatchType, []byte, error) {
	status := map[string]any{}
	if p.setIngress {
		status["loadBalancer"] = map[string]any{"ingress": p.ingress}
	}
	if p.cond == nil && !p.dropCond {
		b, err := json.Marshal(map[string]any{"status": status})
		return types.MergePatchType, b, err
	}
	var cond any = p.cond
	if p.dropCond {
		cond = map[string]any{"type": api.ConditionAllocated, "$patch": "delete"}
	}
	status["conditions"] = []any{cond}
	b, err := json.Marshal(map[string]any{"status": status})
	return types.StrategicMergePatchType, b, err
}
