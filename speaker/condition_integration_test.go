//go:build integration

package speaker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/speaker/election"
)

func conditionWrites(t *testing.T, c *cluster) int {
	t.Helper()
	n := 0
	for _, s := range c.speakers {
		var m dto.Metric
		if err := s.metrics.conditionWrites.Write(&m); err != nil {
			t.Fatal(err)
		}
		n += int(m.GetCounter().GetValue())
	}
	return n
}

// waitCondition waits for the Service's ironlb.io/Announced condition to
// satisfy ok and returns it.
func waitCondition(t *testing.T, ns, name, what string, ok func(*metav1.Condition) bool) *metav1.Condition {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last *metav1.Condition
	for {
		svc, err := env.Client.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = currentCondition(svc)
		if ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; condition %+v", what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAnnouncedCondition: the elected owner records in the Service's status
// who announces each address, once per change; a failover is written once,
// by the new owner; a Service nobody may announce says why; the controller's
// status.loadBalancer and the speakers' condition, written concurrently
// by their own field managers, never clobber each other; and the condition
// goes when the Service stops being a LoadBalancer.
func TestAnnouncedCondition(t *testing.T) {
	suffix := fmt.Sprint(time.Now().UnixNano() % 100000)
	n1, n2, n3 := "a-"+suffix, "b-"+suffix, "c-"+suffix
	for _, n := range []string{n1, n2, n3} {
		node(t, n, true, nil)
	}
	macOf := map[string]string{n1: "02:00:00:00:01:01", n2: "02:00:00:00:01:02", n3: "02:00:00:00:01:03"}
	class := "speaker.ironlb.io/" + suffix
	c := newClusterWith(t, class, "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.100-198.51.100.119, '2001:db8:100::100/124']}\n",
		func(n string, o *Options) {
			mac, _ := net.ParseMAC(macOf[n])
			o.Interfaces = func() []net.Interface { return []net.Interface{{Name: "eth0", HardwareAddr: mac}} }
		}, n1, n2, n3)
	ns := env.Namespace(t)
	ctx := context.Background()

	// A dual-stack Service, as the controller would have assigned it.
	v4, v6 := netip.MustParseAddr("198.51.100.100"), netip.MustParseAddr("2001:db8:100::100")
	// Both addresses in one status write, so that the speakers never see
	// a single-stack Service first (which would be a change of its own).
	svc, err := env.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class,
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: v4.String()}, {IP: v6.String()}}
	if _, err := env.Client.CoreV1().Services(ns).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	check := func(live []string) *metav1.Condition {
		t.Helper()
		o4, o6 := election.Owner(v4, live), election.Owner(v6, live)
		var want []api.Announcement
		for _, a := range []api.Announcement{{IP: v4, Node: o4}, {IP: v6, Node: o6}} {
			if a.Node == o4 {
				// The writer, the owner of the first address, knows its
				// own interface and MAC.
				a.Interface, a.MAC = "eth0", macOf[o4]
			}
			want = append(want, a)
		}
		msg := api.FormatAnnouncements(want)
		cond := waitCondition(t, ns, "web", "the condition to name "+msg, func(c *metav1.Condition) bool {
			return c != nil && c.Status == metav1.ConditionTrue && c.Reason == api.ReasonAnnounced && c.Message == msg
		})
		got, err := api.ParseAnnouncements(cond.Message)
		if err != nil || len(got) != 2 {
			t.Fatalf("condition message %q: %v, %v", cond.Message, got, err)
		}
		return cond
	}
	first := check([]string{n1, n2, n3})
	time.Sleep(time.Second) // resyncs and the write's own watch event
	if n := conditionWrites(t, c); n != 1 {
		t.Errorf("condition written %d times for one assignment, want 1", n)
	}

	// The owner of the first address dies: the new one writes once.
	dead := election.Owner(v4, []string{n1, n2, n3})
	var live []string
	for _, n := range []string{n1, n2, n3} {
		if n != dead {
			live = append(live, n)
		}
	}
	c.speakers[dead].SetIsolated(true)
	c.members(live...)
	second := check(live)
	time.Sleep(time.Second)
	if n := conditionWrites(t, c); n != 2 {
		t.Errorf("condition written %d times after one failover, want 2 in all", n)
	}
	if !second.LastTransitionTime.Equal(&first.LastTransitionTime) {
		t.Errorf("lastTransitionTime moved from %v to %v although the status stayed True", first.LastTransitionTime, second.LastTransitionTime)
	}

	// The controller and the speakers write concurrently: the controller's
	// merge patches of status.loadBalancer while memberships flip and the
	// condition is rewritten. Neither loses the other's fields.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var lastMode string
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mode := []string{"VIP", "Proxy"}[i%2]
			patch := fmt.Sprintf(`{"status":{"loadBalancer":{"ingress":[{"ip":%q,"ipMode":%q},{"ip":%q,"ipMode":%q}]}}}`, v4, mode, v6, mode)
			if _, err := env.Client.CoreV1().Services(ns).Patch(ctx, "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: api.FieldManagerController}, "status"); err != nil {
				t.Error(err)
				return
			}
			lastMode = mode
			time.Sleep(5 * time.Millisecond)
		}
	})
	for i := range 6 {
		set := [][]string{{n1, n2, n3}, live}[i%2]
		c.speakers[dead].SetIsolated(i%2 == 1)
		c.members(set...)
		check(set)
	}
	close(stop)
	wg.Wait()
	got, err := env.Client.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if in := got.Status.LoadBalancer.Ingress; len(in) != 2 || in[0].IP != v4.String() || in[1].IP != v6.String() || in[0].IPMode == nil || string(*in[0].IPMode) != lastMode {
		t.Errorf("controller's ingress after concurrent writes: %+v, want both addresses with ipMode %s", in, lastMode)
	}
	if currentCondition(got) == nil {
		t.Error("condition lost after concurrent writes")
	}
	var managers []string
	for _, mf := range got.ManagedFields {
		if mf.Subresource == "status" {
			managers = append(managers, mf.Manager+"/"+string(mf.Operation))
		}
	}
	if !slices.Contains(managers, api.FieldManagerSpeaker+"/Apply") || !slices.Contains(managers, api.FieldManagerController+"/Update") {
		t.Errorf("status field managers %v, want the speaker's Apply and the controller's Update", managers)
	}

	// A Local Service without a ready endpoint anywhere: nobody may
	// announce it, and the condition says so.
	lbService(t, ns, "local", class, "198.51.100.101", true)
	cond := waitCondition(t, ns, "local", "NoEligibleNode", func(c *metav1.Condition) bool {
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == api.ReasonNoEligibleNode
	})
	t.Logf("no eligible node: %s", cond.Message)
	endpoints(t, ns, "local", live[0])
	waitCondition(t, ns, "local", "Announced once an endpoint is ready", func(c *metav1.Condition) bool {
		return c != nil && c.Status == metav1.ConditionTrue && c.Message == fmt.Sprintf("198.51.100.101 by %s on eth0 (%s)", live[0], macOf[live[0]])
	})

	// A LoadBalancer of another class (another installation's) keeps the
	// condition its own speakers wrote.
	other := "other.ironlb.io/" + suffix
	os, err := env.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "other"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &other,
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	os.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.150"}}
	os.Status.Conditions = []metav1.Condition{{Type: api.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: api.ReasonAnnounced,
		Message: "198.51.100.150 by elsewhere", LastTransitionTime: metav1.Now()}}
	if _, err := env.Client.CoreV1().Services(ns).UpdateStatus(ctx, os, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// No longer a LoadBalancer: the condition goes.
	got.Spec.Type = corev1.ServiceTypeClusterIP
	got.Spec.LoadBalancerClass = nil
	got.Spec.ExternalTrafficPolicy = ""
	got.Spec.AllocateLoadBalancerNodePorts = nil
	for i := range got.Spec.Ports {
		got.Spec.Ports[i].NodePort = 0
	}
	if _, err := env.Client.CoreV1().Services(ns).Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns, "web", "the condition to be removed", func(c *metav1.Condition) bool { return c == nil })
	waitCondition(t, ns, "other", "another class's condition to stay", func(c *metav1.Condition) bool {
		return c != nil && c.Message == "198.51.100.150 by elsewhere"
	})
}
