package controller

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/ipam"
)

func lbService(mutate ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeLoadBalancer,
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports:      []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}, {Port: 53, Protocol: corev1.ProtocolUDP}},
			Selector:   map[string]string{"b": "2", "a": "1"},
		},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

func TestNewRequest(t *testing.T) {
	require := corev1.IPFamilyPolicyRequireDualStack
	prefer := corev1.IPFamilyPolicyPreferDualStack
	tests := []struct {
		name     string
		svc      *corev1.Service
		fams     []ipam.Family
		required []bool
		ips      map[ipam.Family]netip.Addr
		pool     string
		sharing  string
	}{
		{name: "plain", svc: lbService(), fams: []ipam.Family{ipam.IPv4}, required: []bool{true}},
		{name: "annotation", svc: lbService(func(s *corev1.Service) { s.Annotations[api.AnnotationLoadBalancerIPs] = " 10.0.0.5 " }),
			fams: []ipam.Family{ipam.IPv4}, required: []bool{true}, ips: map[ipam.Family]netip.Addr{ipam.IPv4: netip.MustParseAddr("10.0.0.5")}},
		{name: "ironlb annotation wins over metallb's", svc: lbService(func(s *corev1.Service) {
			s.Annotations[api.AnnotationLoadBalancerIPs] = "10.0.0.5"
			s.Annotations[api.MetalLBAnnotationLoadBalancerIPs] = "10.0.0.6"
			s.Annotations[api.MetalLBAnnotationAddressPool] = "old"
			s.Annotations[api.MetalLBAnnotationAllowSharedIP] = "k"
		}), fams: []ipam.Family{ipam.IPv4}, required: []bool{true}, ips: map[ipam.Family]netip.Addr{ipam.IPv4: netip.MustParseAddr("10.0.0.5")}, pool: "old", sharing: "k"},
		{name: "spec.loadBalancerIP decides a single-stack family", svc: lbService(func(s *corev1.Service) { s.Spec.LoadBalancerIP = "2001:db8::5" }),
			fams: []ipam.Family{ipam.IPv6}, required: []bool{true}, ips: map[ipam.Family]netip.Addr{ipam.IPv6: netip.MustParseAddr("2001:db8::5")}},
		{name: "require dual stack, v6 primary", svc: lbService(func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = &require
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		}), fams: []ipam.Family{ipam.IPv6, ipam.IPv4}, required: []bool{true, true}},
		{name: "prefer dual stack with both requested", svc: lbService(func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = &prefer
			s.Annotations[api.AnnotationLoadBalancerIPs] = "2001:db8::5,10.0.0.5"
		}), fams: []ipam.Family{ipam.IPv4, ipam.IPv6}, required: []bool{true, false},
			ips: map[ipam.Family]netip.Addr{ipam.IPv4: netip.MustParseAddr("10.0.0.5"), ipam.IPv6: netip.MustParseAddr("2001:db8::5")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRequest(tt.svc)
			if err != nil {
				t.Fatal(err)
			}
			if tt.ips == nil {
				tt.ips = map[ipam.Family]netip.Addr{}
			}
			if diff := cmp.Diff(tt.fams, r.Families); diff != "" {
				t.Errorf("families (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.required, r.Required); diff != "" {
				t.Errorf("required (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.ips, r.IPs, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("ips (-want +got):\n%s", diff)
			}
			if r.Pool != tt.pool || r.Service.SharingKey != tt.sharing {
				t.Errorf("pool %q sharing %q, want %q %q", r.Pool, r.Service.SharingKey, tt.pool, tt.sharing)
			}
			if r.Service.Key != "ns/web" || r.Service.Selector != "a=1,b=2" || len(r.Service.Ports) != 2 || r.Service.Ports[1] != (ipam.Port{Protocol: "UDP", Port: 53}) {
				t.Errorf("service = %+v", r.Service)
			}
		})
	}
}

func TestNewRequestErrors(t *testing.T) {
	require := corev1.IPFamilyPolicyRequireDualStack
	tests := []struct {
		name string
		svc  *corev1.Service
		want []string
	}{
		{"not an address", lbService(func(s *corev1.Service) { s.Annotations[api.AnnotationLoadBalancerIPs] = "10.0.0.5,banana" }), []string{api.AnnotationLoadBalancerIPs, `"banana"`}},
		{"two of one family", lbService(func(s *corev1.Service) { s.Annotations[api.MetalLBAnnotationLoadBalancerIPs] = "10.0.0.5,10.0.0.6" }), []string{api.MetalLBAnnotationLoadBalancerIPs, "two IPv4", "10.0.0.5, 10.0.0.6"}},
		{"empty", lbService(func(s *corev1.Service) { s.Annotations[api.AnnotationLoadBalancerIPs] = " , " }), []string{"names no address"}},
		{"bad spec field", lbService(func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.0.0.256" }), []string{"spec.loadBalancerIP", `"10.0.0.256"`}},
		{"family outside a dual-stack Service", lbService(func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = &require
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
			s.Annotations[api.AnnotationLoadBalancerIPs] = "10.0.0.5,2001:db8::1,10.0.0.6"
		}), []string{"two IPv4"}},
	}
	for _, tt := range tests {
		_, err := NewRequest(tt.svc)
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tt.name, err, w)
			}
		}
	}
}

func TestSameIngress(t *testing.T) {
	vip, proxy := corev1.LoadBalancerIPModeVIP, corev1.LoadBalancerIPModeProxy
	want := Ingress([]netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")})
	if want[0].IP != "10.0.0.1" || want[1].IP != "2001:db8::1" {
		t.Fatalf("Ingress order = %v", want)
	}
	same := []corev1.LoadBalancerIngress{{IP: "10.0.0.1", IPMode: &vip}, {IP: "2001:db8::1", IPMode: &vip}}
	if !SameIngress(same, want) {
		t.Error("equal ingress reported different")
	}
	for _, cur := range [][]corev1.LoadBalancerIngress{
		nil,
		{{IP: "10.0.0.1", IPMode: &vip}},
		{{IP: "10.0.0.1"}, {IP: "2001:db8::1", IPMode: &vip}},
		{{IP: "10.0.0.1", IPMode: &proxy}, {IP: "2001:db8::1", IPMode: &vip}},
	} {
		if SameIngress(cur, want) {
			t.Errorf("SameIngress(%v) = true", cur)
		}
	}
}

func FuzzParseIPs(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "10.0.0.1, 2001:db8::1", ",", "", "fe80::1%eth0", "::ffff:1.2.3.4", "1.2.3.4,,5.6.7.8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		ips, err := ParseIPs(raw)
		if err != nil {
			if ips != nil {
				t.Fatalf("ParseIPs(%q) returned %v with an error", raw, ips)
			}
			return
		}
		if len(ips) == 0 {
			t.Fatalf("ParseIPs(%q) returned no address and no error", raw)
		}
		for _, ip := range ips {
			if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
				t.Fatalf("ParseIPs(%q) returned %v", raw, ip)
			}
		}
		// Whatever the annotation holds, building a request must not panic.
		NewRequest(lbService(func(s *corev1.Service) { s.Annotations[api.AnnotationLoadBalancerIPs] = raw }))
	})
}
