package service

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func lb(mutate ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

func TestOurs(t *testing.T) {
	class, other := "x.io/lb", "y.io/lb"
	for _, tt := range []struct {
		name  string
		svc   *corev1.Service
		class string
		want  bool
	}{
		{"classless LB, no flag", lb(), "", true},
		{"ClusterIP", lb(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP }), "", false},
		{"NodePort", lb(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }), "", false},
		{"other class, no flag", lb(func(s *corev1.Service) { s.Spec.LoadBalancerClass = &other }), "", false},
		{"our class", lb(func(s *corev1.Service) { s.Spec.LoadBalancerClass = &class }), class, true},
		{"other class, with flag", lb(func(s *corev1.Service) { s.Spec.LoadBalancerClass = &other }), class, false},
		{"classless, with flag", lb(), class, false},
	} {
		if got := Ours(tt.svc, tt.class); got != tt.want {
			t.Errorf("%s: Ours = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestIngressIPs(t *testing.T) {
	svc := lb(func(s *corev1.Service) {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
			{IP: "2001:db8::1"}, {Hostname: "lb.example.com"}, {IP: "not an ip"}, {IP: "192.0.2.1"},
		}
	})
	want := []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1")}
	if diff := cmp.Diff(want, IngressIPs(svc), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("IngressIPs (-want +got):\n%s", diff)
	}
	if got := IngressIPs(lb()); got != nil {
		t.Errorf("no status: IngressIPs = %v, want nil", got)
	}
	if got := Key(svc); got != "ns/web" {
		t.Errorf("Key = %q", got)
	}
}
