// Package service holds what both the controller and the speaker need to
// know about a Service: whether ironlb handles it, and the addresses its
// status gives it. It keeps the speaker from importing the controller (and
// with it the workqueue and the controller's metrics).
package service

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// Ours reports whether ironlb handles svc: a LoadBalancer whose
// loadBalancerClass is unset, or equals class when class is set (the
// --lb-class flag of both binaries).
func Ours(svc *corev1.Service, class string) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if class == "" {
		return svc.Spec.LoadBalancerClass == nil
	}
	return svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == class
}

// IngressIPs reads the addresses from a Service's status, in status order,
// skipping hostnames and anything unparsable.
func IngressIPs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// Key is the Service's "namespace/name", the key both binaries use.
func Key(svc *corev1.Service) string { return svc.Namespace + "/" + svc.Name }
