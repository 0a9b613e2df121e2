//go:build integration

package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/ironlb/ironlb/api"
)

// allocationFailures counts the AllocationFailed Events on a Service, each
// repeat of a series included.
func allocationFailures(t *testing.T, ns, name string) int {
	t.Helper()
	list, err := env.Client.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Regarding.Name != name || e.Reason != api.EventAllocationFailed {
			continue
		}
		n++
		if e.Series != nil {
			n += int(e.Series.Count) - 1
		}
	}
	return n
}

func getSvc(t *testing.T, ns, name string) *corev1.Service {
	t.Helper()
	s, err := env.Client.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func condition(svc *corev1.Service, typ string) *metav1.Condition {
	for i := range svc.Status.Conditions {
		if svc.Status.Conditions[i].Type == typ {
			return &svc.Status.Conditions[i]
		}
	}
	return nil
}

// applyAnnounced writes the speakers' condition as a speaker does: server-
// side apply of that condition alone, under the speakers' field manager.
func applyAnnounced(t *testing.T, ns, name, msg string) {
	t.Helper()
	ac := corev1ac.Service(name, ns).WithStatus(corev1ac.ServiceStatus().WithConditions(metav1ac.Condition().
		WithType(api.ConditionAnnounced).WithStatus(metav1.ConditionFalse).WithReason(api.ReasonNoEligibleNode).
		WithMessage(msg).WithLastTransitionTime(metav1.Now())))
	if _, err := env.Client.CoreV1().Services(ns).ApplyStatus(context.Background(), ac, metav1.ApplyOptions{FieldManager: api.FieldManagerSpeaker, Force: true}); err != nil {
		t.Fatalf("applying %s to %s/%s: %v", api.ConditionAnnounced, ns, name, err)
	}
}

// A Service the controller refuses carries the reason in its
// ironlb.io/Allocated condition, and gets one AllocationFailed Event. A
// restarted controller finds the condition and, the failure being the
// same, writes nothing: no Event, no status. Once an address is free the
// Service gets it, and the same write removes the condition. The speakers'
// condition, applied by its own field manager, survives every write of
// the controller, and the controller's survives the speakers'.
func TestRestartKeepsRefusalQuiet(t *testing.T) {
	h := newHarness(t, "refused.ironlb.io/test", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.96/32]}\n")
	ns := env.Namespace(t)
	ctx := context.Background()
	h.svc(ns, "a")
	waitIngress(t, ns, "a", "198.51.100.96")

	// b exists, with the speakers' condition, before any controller
	// looks at it.
	h.stop()
	h.svc(ns, "b")
	applyAnnounced(t, ns, "b", "no live speaker may announce it")
	h.start()
	var b *corev1.Service
	eventually(t, "b to carry the Allocated condition", func() (bool, string) {
		b = getSvc(t, ns, "b")
		c := condition(b, api.ConditionAllocated)
		return c != nil, fmt.Sprint(b.Status.Conditions)
	})
	c := condition(b, api.ConditionAllocated)
	if c.Status != metav1.ConditionFalse || c.Reason != api.ReasonPoolExhausted || c.ObservedGeneration != b.Generation {
		t.Errorf("condition %+v, want False %s at generation %d", c, api.ReasonPoolExhausted, b.Generation)
	}
	if a := condition(b, api.ConditionAnnounced); a == nil || a.Message != "no live speaker may announce it" {
		t.Errorf("the speakers' condition is %+v after the controller's write", a)
	}
	if len(b.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("b has ingress %v from a full pool", b.Status.LoadBalancer.Ingress)
	}
	msg := waitEvent(t, ns, "b", api.EventAllocationFailed)
	if msg != c.Message {
		t.Errorf("Event says %q, condition says %q", msg, c.Message)
	}
	if n := h.ctrl.Metrics().Events(api.EventAllocationFailed); n != 1 {
		t.Errorf("the controller recorded %v AllocationFailed Events, want 1", n)
	}
	eventually(t, "one AllocationFailed Event on b", func() (bool, string) {
		n := allocationFailures(t, ns, "b")
		return n == 1, fmt.Sprint(n)
	})

	// A speaker's later write leaves the controller's condition alone.
	applyAnnounced(t, ns, "b", "still no live speaker")
	b = getSvc(t, ns, "b")
	if got := condition(b, api.ConditionAllocated); got == nil || got.Message != c.Message {
		t.Fatalf("the controller's condition is %+v after the speakers' apply", got)
	}
	rv := b.ResourceVersion

	// Restart: the new controller reconciles b (the failure counter says
	// it is done with it) and finds nothing to say.
	h.stop()
	h.start()
	eventually(t, "the restarted controller to reconcile b", func() (bool, string) {
		n := counterValue(h.ctrl.Metrics().failures)
		return h.ctrl.Ready() && n >= 1, fmt.Sprint(n)
	})
	if n := h.ctrl.Metrics().Events(api.EventAllocationFailed); n != 0 {
		t.Errorf("restarted controller recorded %v AllocationFailed Events, want 0", n)
	}
	if w := h.ctrl.Metrics().StatusWrites(); w != 0 {
		t.Errorf("restarted controller made %v status writes, want 0", w)
	}
	if got := getSvc(t, ns, "b").ResourceVersion; got != rv {
		t.Errorf("b went from resourceVersion %s to %s across the restart", rv, got)
	}
	if n := allocationFailures(t, ns, "b"); n != 1 {
		t.Errorf("%d AllocationFailed Events on b after the restart, want still 1", n)
	}

	// Free the address: b gets it, and the write that gives it removes
	// the condition. Every version of b on the way is watched, so an
	// extra write (ingress first, condition later) cannot hide.
	w, err := env.Client.CoreV1().Services(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", "b").String(), ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := env.Client.CoreV1().Services(ns).Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(20 * time.Second)
	versions := 0
	for served := false; !served; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("the watch of b ended")
			}
			if ev.Type != watch.Modified {
				t.Fatalf("watch of b: %s %v", ev.Type, ev.Object)
			}
			s := ev.Object.(*corev1.Service)
			versions++
			if len(s.Status.LoadBalancer.Ingress) == 0 {
				continue
			}
			served = true
			if got := condition(s, api.ConditionAllocated); got != nil {
				t.Errorf("b got %v and still carries %+v", s.Status.LoadBalancer.Ingress, got)
			}
			if s.Status.LoadBalancer.Ingress[0].IP != "198.51.100.96" {
				t.Errorf("b got %v, want 198.51.100.96", s.Status.LoadBalancer.Ingress)
			}
			if a := condition(s, api.ConditionAnnounced); a == nil || a.Message != "still no live speaker" {
				t.Errorf("the speakers' condition is %+v after the controller assigned the address", a)
			}
		case <-timeout:
			t.Fatal("timed out waiting for b to get the freed address")
		}
	}
	if versions != 1 {
		t.Errorf("b changed %d times before it was served, want once", versions)
	}
	waitEvent(t, ns, "b", api.EventIPAllocated, "198.51.100.96")
	if n := h.ctrl.Metrics().Events(api.EventAllocationFailed); n != 0 {
		t.Errorf("controller recorded %v AllocationFailed Events, want 0", n)
	}
	if w := h.ctrl.Metrics().StatusWrites(); w != 1 {
		t.Errorf("the controller made %v status writes, want the one that served b", w)
	}
}

// An address kept on restore although no pool covers it any more is
// reported once, in the condition and one Event. A later restart, even
// under another config that still does not cover it, says nothing new;
// once a config covers it, the condition goes.
func TestRestartKeepsPinnedQuiet(t *testing.T) {
	h := newHarness(t, "pinned-quiet.ironlb.io/test", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.112/30]}\n")
	ns := env.Namespace(t)
	ctx := context.Background()
	h.svc(ns, "a")
	waitIngress(t, ns, "a", "198.51.100.112")
	h.stop()
	// Changed while no controller could refuse it.
	h.setConfig("address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.116/30]}\n")
	h.start()
	var a *corev1.Service
	eventually(t, "a to carry the Allocated condition", func() (bool, string) {
		a = getSvc(t, ns, "a")
		return condition(a, api.ConditionAllocated) != nil, fmt.Sprint(a.Status.Conditions)
	})
	c := condition(a, api.ConditionAllocated)
	if c.Reason != api.ReasonAddressNotInPool || !strings.Contains(c.Message, "198.51.100.112") || !strings.Contains(c.Message, "kept until the config covers it") {
		t.Errorf("condition %+v, want %s about 198.51.100.112", c, api.ReasonAddressNotInPool)
	}
	waitEvent(t, ns, "a", api.EventAllocationFailed, "198.51.100.112")
	eventually(t, "one AllocationFailed Event on a", func() (bool, string) {
		n := allocationFailures(t, ns, "a")
		return n == 1, fmt.Sprint(n)
	})

	// Another config change while the controller is down, which still
	// leaves a's address out, and a spec change: the restarted controller
	// follows the spec's generation in the condition (the signal that it
	// reconciled a) and raises no Event, for nothing new happened to a.
	h.stop()
	h.setConfig("address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.116/30]}\n- {name: q, protocol: layer2, addresses: [198.51.100.120/30]}\n")
	a = getSvc(t, ns, "a")
	a.Spec.Ports = append(a.Spec.Ports, corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP})
	a, err := env.Client.CoreV1().Services(ns).Update(ctx, a, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gen := a.Generation
	h.start()
	eventually(t, "the restarted controller to reconcile a", func() (bool, string) {
		c := condition(getSvc(t, ns, "a"), api.ConditionAllocated)
		return c != nil && c.ObservedGeneration == gen, fmt.Sprintf("%+v, generation %d", c, gen)
	})
	if n := h.ctrl.Metrics().Events(api.EventAllocationFailed); n != 0 {
		t.Errorf("restarted controller recorded %v AllocationFailed Events, want 0", n)
	}
	if got := condition(getSvc(t, ns, "a"), api.ConditionAllocated); got.Message != c.Message || !got.LastTransitionTime.Equal(&c.LastTransitionTime) {
		t.Errorf("condition went from %+v to %+v", c, got)
	}

	// Covered again: an ordinary assignment, with nothing to report.
	h.setConfig("address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.112/29]}\n")
	eventually(t, "a's condition to go", func() (bool, string) {
		a = getSvc(t, ns, "a")
		return condition(a, api.ConditionAllocated) == nil, fmt.Sprint(a.Status.Conditions)
	})
	if got := ingress(t, ns, "a"); len(got) != 1 || got[0] != "198.51.100.112" {
		t.Errorf("a has %v, want its address kept", got)
	}
	if n := allocationFailures(t, ns, "a"); n != 1 {
		t.Errorf("%d AllocationFailed Events on a, want still 1", n)
	}
}

// A Service served at once costs one status write, as before the
// condition existed: the condition is only ever written for a refusal.
func TestServedAtOnceOneWrite(t *testing.T) {
	const n = 20
	h := newHarness(t, "one-write.ironlb.io/test", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.128/27]}\n")
	ns := env.Namespace(t)
	for i := range n {
		h.svc(ns, fmt.Sprint("s", i))
	}
	// IPAllocated is recorded after the write that assigns the address.
	eventually(t, "every Service to be served", func() (bool, string) {
		got := h.ctrl.Metrics().Events(api.EventIPAllocated)
		return got == n, fmt.Sprint(got)
	})
	if w := h.ctrl.Metrics().StatusWrites(); w != n {
		t.Errorf("%d Services served with %v status writes, want %d", n, w, n)
	}
	for i := range n {
		if s := getSvc(t, ns, fmt.Sprint("s", i)); len(s.Status.Conditions) != 0 || len(s.Status.LoadBalancer.Ingress) != 1 {
			t.Errorf("s%d: status %+v, want one address and no condition", i, s.Status)
		}
	}
}
