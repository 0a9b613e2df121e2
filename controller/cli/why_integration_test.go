//go:build integration

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
)

// why reads the controller's ironlb.io/Allocated condition first: it says
// why a Service is refused for as long as it is, while the Events about it
// may be older (or gone, after an hour). The Events stay the fallback
// (the "pending" case of TestPlugin).
func TestWhyReadsAllocatedCondition(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t)
	now := time.Now().Truncate(time.Second)
	c := env.Client.CoreV1()
	if _, err := c.ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "config"}, Data: map[string]string{api.ConfigKey: poolConfig},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, ips []string, cond metav1.Condition) *corev1.Service {
		svc, err := c.Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range ips {
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
		svc.Status.Conditions = []metav1.Condition{cond}
		if svc, err = c.Services(ns).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return svc
	}
	refused := mk("refused", nil, metav1.Condition{
		Type: api.ConditionAllocated, Status: metav1.ConditionFalse, Reason: api.ReasonPoolExhausted,
		Message:            "IPv4 address: no free IPv4 address left in pool lab; free an address or add addresses to the pool",
		LastTransitionTime: metav1.NewTime(now.Add(-3 * time.Hour)),
	})
	// An older word of the controller, about a failure since replaced.
	if _, err := c.Events(ns).Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: "refused-"},
		InvolvedObject: corev1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: ns, Name: "refused", UID: refused.UID},
		Reason:         api.EventAllocationFailed, Message: "address 198.51.100.100 is in use by x/y", Type: corev1.EventTypeWarning, Count: 1,
		Source:         corev1.EventSource{Component: "ironlb-controller"},
		FirstTimestamp: metav1.NewTime(now.Add(-5 * time.Minute)), LastTimestamp: metav1.NewTime(now.Add(-5 * time.Minute)),
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mk("kept", []string{"198.51.100.100"}, metav1.Condition{
		Type: api.ConditionAllocated, Status: metav1.ConditionFalse, Reason: api.ReasonInvalidRequest,
		Message:            `annotation ironlb.io/loadBalancerIPs: "x" is not an IP address`,
		LastTransitionTime: metav1.NewTime(now.Add(-time.Minute)),
	})

	admin := clientsFor(t, env.Config)
	for _, tc := range []struct {
		svc     string
		want    []string
		not     []string
		refused string
	}{
		{"refused", []string{"has no address", "condition ironlb.io/Allocated is False since 3h ago, reason PoolExhausted", "no free IPv4 address left in pool lab"},
			[]string{"in use by x/y"}, api.ReasonPoolExhausted},
		{"kept", []string{"has address 198.51.100.100", "reason InvalidRequest", `"x" is not an IP address`},
			[]string{"nothing wrong"}, api.ReasonInvalidRequest},
	} {
		var out, errOut bytes.Buffer
		o := Options{Namespace: ns, IronlbNamespace: ns, ConfigName: "config", Out: &out, ErrOut: &errOut, Now: func() time.Time { return now }}
		if err := run(t, admin, func(ctx context.Context, c *Clients, o Options) error { return Why(ctx, c, o, tc.svc) }, o); err != nil {
			t.Fatalf("why %s: %v", tc.svc, err)
		}
		got := out.String()
		t.Logf("kubectl ironlb why %s:\n%s", tc.svc, got)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("why %s lacks %q:\n%s", tc.svc, w, got)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(got, w) {
				t.Errorf("why %s says %q:\n%s", tc.svc, w, got)
			}
		}

		out.Reset()
		o.Output = "json"
		if err := run(t, admin, func(ctx context.Context, c *Clients, o Options) error { return Why(ctx, c, o, tc.svc) }, o); err != nil {
			t.Fatalf("why -o json %s: %v", tc.svc, err)
		}
		var rep WhyReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("why -o json %s: %v\n%s", tc.svc, err, &out)
		}
		if diff := cmp.Diff(tc.refused, rep.Refused); diff != "" {
			t.Errorf("why -o json %s: refused (-want +got):\n%s", tc.svc, diff)
		}
	}
}
