// Package controller assigns EXTERNAL-IPs to LoadBalancer Services: it
// watches Services and the address-pool ConfigMap, keeps an ipam.Allocator
// in step with them, and writes status.loadBalancer.ingress.
package controller

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/ipam"
)

// Request is what a Service asks of the allocator; the ledger decides on
// it (ipam.Ledger.Ensure).
type Request = ipam.Request

// annotation returns the ironlb annotation, else its MetalLB spelling.
func annotation(svc *corev1.Service, key, metallbKey string) string {
	if v, ok := svc.Annotations[key]; ok {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(svc.Annotations[metallbKey])
}

// NewRequest reads a Service's request. Its errors are for the user: they
// name the field or annotation and the bad value.
func NewRequest(svc *corev1.Service) (*Request, error) {
	r := &Request{
		Service: ipam.Service{
			Key:        svc.Namespace + "/" + svc.Name,
			SharingKey: annotation(svc, api.AnnotationAllowSharedIP, api.MetalLBAnnotationAllowSharedIP),
			Local:      svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
			Selector:   canonicalSelector(svc.Spec.Selector),
		},
		IPs:  map[ipam.Family]netip.Addr{},
		Pool: annotation(svc, api.AnnotationAddressPool, api.MetalLBAnnotationAddressPool),
	}
	for _, p := range svc.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		r.Service.Ports = append(r.Service.Ports, ipam.Port{Protocol: proto, Port: p.Port})
	}

	r.Families, r.Required = families(svc)

	ips, field, err := requestedIPs(svc)
	if err != nil {
		return nil, err
	}
	for _, ip := range ips {
		f := ipam.FamilyOf(ip)
		if _, dup := r.IPs[f]; dup {
			return nil, fmt.Errorf("%s requests two %s addresses (%s); request at most one address per family", field, f, joinAddrs(ips))
		}
		r.IPs[f] = ip
		if !slices.Contains(r.Families, f) {
			// A requested address decides the family of a single-stack
			// Service; a dual-stack Service must ask within its families.
			if len(r.Families) <= 1 && len(ips) == 1 {
				r.Families, r.Required = []ipam.Family{f}, []bool{true}
				continue
			}
			return nil, fmt.Errorf("%s requests %s address %s, but the Service's ipFamilies are %v", field, f, ip, svc.Spec.IPFamilies)
		}
	}
	return r, nil
}

// families reads ipFamilyPolicy and ipFamilies.
func families(svc *corev1.Service) ([]ipam.Family, []bool) {
	var fams []ipam.Family
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			fams = append(fams, ipam.IPv4)
		case corev1.IPv6Protocol:
			fams = append(fams, ipam.IPv6)
		}
	}
	policy := corev1.IPFamilyPolicySingleStack
	if svc.Spec.IPFamilyPolicy != nil {
		policy = *svc.Spec.IPFamilyPolicy
	}
	if len(fams) == 0 {
		fams = []ipam.Family{ipam.IPv4}
	}
	switch policy {
	case corev1.IPFamilyPolicyRequireDualStack:
		fams = bothFamilies(fams)
		return fams, []bool{true, true}
	case corev1.IPFamilyPolicyPreferDualStack:
		fams = bothFamilies(fams)
		return fams, []bool{true, false}
	}
	return fams[:1], []bool{true}
}

func bothFamilies(fams []ipam.Family) []ipam.Family {
	if fams[0] == ipam.IPv6 {
		return []ipam.Family{ipam.IPv6, ipam.IPv4}
	}
	return []ipam.Family{ipam.IPv4, ipam.IPv6}
}

// requestedIPs reads the loadBalancerIPs annotation, else the deprecated
// spec.loadBalancerIP, and names where the request came from.
func requestedIPs(svc *corev1.Service) ([]netip.Addr, string, error) {
	field := "annotation " + api.AnnotationLoadBalancerIPs
	raw, ok := svc.Annotations[api.AnnotationLoadBalancerIPs]
	if !ok {
		if raw, ok = svc.Annotations[api.MetalLBAnnotationLoadBalancerIPs]; ok {
			field = "annotation " + api.MetalLBAnnotationLoadBalancerIPs
		}
	}
	if !ok {
		if svc.Spec.LoadBalancerIP == "" {
			return nil, "", nil
		}
		raw, field = svc.Spec.LoadBalancerIP, "spec.loadBalancerIP"
	}
	ips, err := ParseIPs(raw)
	if err != nil {
		return nil, field, fmt.Errorf("%s: %v", field, err)
	}
	return ips, field, nil
}

// ParseIPs parses a comma-separated list of addresses, as written in the
// loadBalancerIPs annotation.
func ParseIPs(raw string) ([]netip.Addr, error) {
	var ips []netip.Addr
	for part := range strings.SplitSeq(raw, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		ip, err := netip.ParseAddr(part)
		if err != nil || ip.Zone() != "" || ip.Is4In6() {
			return nil, fmt.Errorf("%q is not an IP address; write addresses like 192.168.56.100 or 2001:db8::10, separated by commas", part)
		}
		ips = append(ips, ip)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%q names no address; remove it or write an address like 192.168.56.100", raw)
	}
	return ips, nil
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

// canonicalSelector renders a pod selector so that equal selectors give
// equal strings, whatever the map order.
func canonicalSelector(sel map[string]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + sel[k])
	}
	return b.String()
}

// Ingress returns the status the Service should have for its addresses,
// which the ledger gives in the order of the Service's families.
func Ingress(addrs []netip.Addr) []corev1.LoadBalancerIngress {
	vip := corev1.LoadBalancerIPModeVIP
	var out []corev1.LoadBalancerIngress
	for _, a := range addrs {
		out = append(out, corev1.LoadBalancerIngress{IP: a.String(), IPMode: &vip})
	}
	return out
}

// SameIngress reports whether the current status already says what want
// says, so nothing needs writing.
func SameIngress(cur, want []corev1.LoadBalancerIngress) bool {
	return slices.EqualFunc(cur, want, func(a, b corev1.LoadBalancerIngress) bool {
		return a.IP == b.IP && a.Hostname == b.Hostname && len(a.Ports) == 0 &&
			(a.IPMode == nil) == (b.IPMode == nil) && (a.IPMode == nil || *a.IPMode == *b.IPMode)
	})
}
