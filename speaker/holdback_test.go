package speaker

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func svcWithPolicy(name string, p corev1.ServiceExternalTrafficPolicy) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: p, HealthCheckNodePort: 32000},
	}
}

// TestHoldBack covers when a new owner waits for its service proxy before
// announcing: only a handover from a live speaker for a Local Service
// whose proxy says "no local endpoint yet", and never longer than the
// bound. A failover (the previous owner is gone) never waits and never
// asks the proxy.
func TestHoldBack(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.100")
	local := svcWithPolicy("local", corev1.ServiceExternalTrafficPolicyLocal)
	cluster := svcWithPolicy("cluster", corev1.ServiceExternalTrafficPolicyCluster)
	for _, tc := range []struct {
		name    string
		prev    string // previous owner, "" for none
		members []string
		svcs    []*corev1.Service
		serving bool
		nilFunc bool
		want    bool
		asked   bool
	}{
		{"handover from a live node, proxy not ready: wait", "n2", []string{"n1", "n2"}, []*corev1.Service{local}, false, false, true, true},
		{"handover from a live node, proxy ready: announce", "n2", []string{"n1", "n2"}, []*corev1.Service{local}, true, false, false, true},
		{"failover, previous owner dead: announce without asking", "n2", []string{"n1"}, []*corev1.Service{local}, false, false, false, false},
		{"new assignment: announce without asking", "", []string{"n1", "n2"}, []*corev1.Service{local}, false, false, false, false},
		{"Cluster policy: every node forwards, announce", "n2", []string{"n1", "n2"}, []*corev1.Service{cluster}, false, false, false, false},
		{"shared address, one Local Service not served yet: wait", "n2", []string{"n1", "n2"}, []*corev1.Service{cluster, local}, false, false, true, true},
		{"no proxy check configured: announce", "n2", []string{"n1", "n2"}, []*corev1.Service{local}, false, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			asked := false
			s := &Speaker{
				opts:    Options{NodeName: "n1", LocalServingWait: time.Hour},
				owners:  map[netip.Addr]string{},
				waiting: map[netip.Addr]time.Time{},
			}
			if !tc.nilFunc {
				s.opts.LocalServing = func(context.Context, *corev1.Service) bool { asked = true; return tc.serving }
			}
			if tc.prev != "" {
				s.owners[ip] = tc.prev
			}
			if got := s.holdBack(context.Background(), ip, tc.svcs, tc.members); got != tc.want {
				t.Errorf("holdBack = %v, want %v", got, tc.want)
			}
			if asked != tc.asked {
				t.Errorf("proxy asked = %v, want %v", asked, tc.asked)
			}
			if _, w := s.waiting[ip]; w != tc.want {
				t.Errorf("waiting recorded = %v, want %v", w, tc.want)
			}
		})
	}
}

// TestHoldBackBounded: a proxy that never says yes holds an address back
// for LocalServingWait at most, and a yes ends the wait at once.
func TestHoldBackBounded(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.100")
	local := svcWithPolicy("local", corev1.ServiceExternalTrafficPolicyLocal)
	serving := false
	s := &Speaker{
		opts: Options{NodeName: "n1", LocalServingWait: time.Minute,
			LocalServing: func(context.Context, *corev1.Service) bool { return serving }},
		owners:  map[netip.Addr]string{ip: "n2"},
		waiting: map[netip.Addr]time.Time{},
	}
	members := []string{"n1", "n2"}
	if !s.holdBack(context.Background(), ip, []*corev1.Service{local}, members) {
		t.Fatal("first check: not held back")
	}
	if !s.holdBack(context.Background(), ip, []*corev1.Service{local}, members) {
		t.Fatal("second check: not held back")
	}
	// The old owner dies during the wait: now it is a failover.
	if s.holdBack(context.Background(), ip, []*corev1.Service{local}, []string{"n1"}) {
		t.Fatal("held back although the previous owner is gone")
	}
	if !s.holdBack(context.Background(), ip, []*corev1.Service{local}, members) {
		t.Fatal("a new handover is not held back")
	}
	s.waiting[ip] = time.Now().Add(-2 * time.Minute)
	if s.holdBack(context.Background(), ip, []*corev1.Service{local}, members) {
		t.Fatal("held back past LocalServingWait")
	}
	if _, w := s.waiting[ip]; w {
		t.Error("wait still recorded after the bound")
	}
	if !s.holdBack(context.Background(), ip, []*corev1.Service{local}, members) {
		t.Fatal("a new handover is not held back")
	}
	serving = true
	if s.holdBack(context.Background(), ip, []*corev1.Service{local}, members) {
		t.Fatal("held back although the proxy serves")
	}
}
