//go:build integration

package controller

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/hack/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }

// harness is one controller with its own config namespace and class.
type harness struct {
	t      *testing.T
	ns     string // where its ConfigMap lives
	class  string
	ctrl   *Controller
	cancel context.CancelFunc
	done   chan struct{}
}

func newHarness(t *testing.T, class, cfg string) *harness {
	t.Helper()
	h := &harness{t: t, ns: env.Namespace(t), class: class}
	if cfg != "" {
		h.setConfig(cfg)
	}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	ctx = klog.NewContext(ctx, klog.Background().WithName(h.t.Name()))
	h.ctrl = New(env.Client, Options{Namespace: h.ns, ConfigName: "config", LBClass: h.class, Workers: 8, Instance: "test"})
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		if err := h.ctrl.Run(ctx); err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}()
}

func (h *harness) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

func (h *harness) setConfig(text string) {
	h.t.Helper()
	ctx := context.Background()
	cms := env.Client.CoreV1().ConfigMaps(h.ns)
	cm, err := cms.Get(ctx, "config", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "config"}, Data: map[string]string{"config": text}}, metav1.CreateOptions{})
	} else if err == nil {
		cm.Data = map[string]string{"config": text}
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		h.t.Fatal(err)
	}
}

// svc creates a LoadBalancer Service of the harness's class.
func (h *harness) svc(ns, name string, mutate ...func(*corev1.Service)) *corev1.Service {
	h.t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	if h.class != "" {
		s.Spec.LoadBalancerClass = &h.class
	}
	for _, m := range mutate {
		m(s)
	}
	out, err := env.Client.CoreV1().Services(ns).Create(context.Background(), s, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatalf("creating Service %s/%s: %v", ns, name, err)
	}
	return out
}

func annotate(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Annotations[k] = v }
}

func ports(ps ...int32) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.Ports = nil
		for _, p := range ps {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprint("p", p), Port: p, Protocol: corev1.ProtocolTCP})
		}
	}
}

func ingress(t *testing.T, ns, name string) []string {
	t.Helper()
	s, err := env.Client.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
		if in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeVIP {
			t.Errorf("%s/%s ingress %s has ipMode %v, want VIP", ns, name, in.IP, in.IPMode)
		}
	}
	return ips
}

// eventually polls until cond holds, failing with what it last said.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last: %s", what, last)
}

func waitIngress(t *testing.T, ns, name string, want ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s/%s to have %v", ns, name, want), func() (bool, string) {
		got := ingress(t, ns, name)
		return slices.Equal(got, want), fmt.Sprint(got)
	})
}

// events returns the messages of Events with reason on the object.
func events(t *testing.T, ns, name, reason string) []string {
	t.Helper()
	list, err := env.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name && e.Reason == reason {
			out = append(out, e.Message)
		}
	}
	return out
}

func waitEvent(t *testing.T, ns, name, reason string, contains ...string) string {
	t.Helper()
	var found string
	eventually(t, fmt.Sprintf("%s Event on %s/%s mentioning %q", reason, ns, name, contains), func() (bool, string) {
		evs := events(t, ns, name, reason)
		for _, m := range evs {
			ok := true
			for _, c := range contains {
				ok = ok && strings.Contains(m, c)
			}
			if ok {
				found = m
				return true, ""
			}
		}
		return false, fmt.Sprint(evs)
	})
	return found
}

const walkthroughConfig = `address-pools:
- name: default
  protocol: layer2
  addresses:
  - 192.168.56.100-192.168.56.110
`

// The user's journey from DESIGN.md: the ingress controller's Service gets
// the first address of the pool, visible to kubectl as EXTERNAL-IP.
func TestIngressWalkthrough(t *testing.T) {
	h := newHarness(t, "", walkthroughConfig)
	ctx := context.Background()
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ingress-nginx"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.svc("ingress-nginx", "ingress-nginx-controller", ports(80, 443))
	waitIngress(t, "ingress-nginx", "ingress-nginx-controller", "192.168.56.100")
	out := env.Kubectl(t, "get", "svc", "-n", "ingress-nginx")
	if !strings.Contains(out, "ingress-nginx-controller") || !strings.Contains(out, "192.168.56.100") || strings.Contains(out, "<pending>") {
		t.Errorf("kubectl get svc shows:\n%s", out)
	}
	waitEvent(t, "ingress-nginx", "ingress-nginx-controller", api.EventIPAllocated, "192.168.56.100", "pool default")
	waitEvent(t, h.ns, "config", api.EventConfigLoaded, `pool "default": 11 addresses`)
}

func TestRequests(t *testing.T) {
	h := newHarness(t, "requests.ironlb.io/test", `address-pools:
- name: a-auto
  protocol: layer2
  addresses: [198.51.100.0/29]
- name: manual
  protocol: layer2
  auto-assign: false
  addresses: [198.51.100.64/29, 2001:db8:100::/125]
- name: team
  protocol: layer2
  addresses: [198.51.100.128/29]
  namespaces: [team-only]
`)
	ns := env.Namespace(t)
	h.svc(ns, "annotated", annotate(api.AnnotationLoadBalancerIPs, "198.51.100.66"))
	h.svc(ns, "legacy", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "198.51.100.67" })
	h.svc(ns, "migrated", annotate(api.MetalLBAnnotationLoadBalancerIPs, "198.51.100.68"))
	h.svc(ns, "by-pool", annotate(api.AnnotationAddressPool, "manual"))
	h.svc(ns, "by-metallb-pool", annotate(api.MetalLBAnnotationAddressPool, "manual"))
	h.svc(ns, "auto")
	waitIngress(t, ns, "annotated", "198.51.100.66")
	waitIngress(t, ns, "legacy", "198.51.100.67")
	waitIngress(t, ns, "migrated", "198.51.100.68")
	eventually(t, "pool-annotated Services in pool manual", func() (bool, string) {
		a, b := ingress(t, ns, "by-pool"), ingress(t, ns, "by-metallb-pool")
		ok := len(a) == 1 && len(b) == 1 && a[0] != b[0] && strings.HasPrefix(a[0], "198.51.100.6") && strings.HasPrefix(b[0], "198.51.100.6")
		return ok, fmt.Sprint(a, b)
	})
	waitIngress(t, ns, "auto", "198.51.100.0")

	// Refusals, each with an Event a user can act on.
	h.svc(ns, "outside", annotate(api.AnnotationLoadBalancerIPs, "203.0.113.9"))
	waitEvent(t, ns, "outside", api.EventAllocationFailed, "203.0.113.9", "not in any address pool")
	h.svc(ns, "taken", annotate(api.AnnotationLoadBalancerIPs, "198.51.100.66"))
	waitEvent(t, ns, "taken", api.EventAllocationFailed, "198.51.100.66", "in use by "+ns+"/annotated")
	h.svc(ns, "no-pool", annotate(api.AnnotationAddressPool, "nope"))
	waitEvent(t, ns, "no-pool", api.EventAllocationFailed, `"nope" does not exist`)
	h.svc(ns, "bad-ip", annotate(api.AnnotationLoadBalancerIPs, "198.51.100.300"))
	waitEvent(t, ns, "bad-ip", api.EventAllocationFailed, api.AnnotationLoadBalancerIPs, `"198.51.100.300"`)
	h.svc(ns, "intruder", annotate(api.AnnotationLoadBalancerIPs, "198.51.100.130"))
	waitEvent(t, ns, "intruder", api.EventAllocationFailed, "198.51.100.130", `"team"`, "does not allow namespace")
	for _, n := range []string{"outside", "taken", "no-pool", "bad-ip", "intruder"} {
		if got := ingress(t, ns, n); got != nil {
			t.Errorf("%s got %v despite its failure", n, got)
		}
	}

	// Namespace-restricted pool: allowed in its namespace.
	teamNS := "team-only"
	if _, err := env.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: teamNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.svc(teamNS, "member", annotate(api.AnnotationLoadBalancerIPs, "198.51.100.130"))
	waitIngress(t, teamNS, "member", "198.51.100.130")
}

func TestSharing(t *testing.T) {
	h := newHarness(t, "sharing.ironlb.io/test", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.10-198.51.100.19]}\n")
	ns := env.Namespace(t)
	h.svc(ns, "web", annotate(api.AnnotationAllowSharedIP, "k"), ports(80))
	waitIngress(t, ns, "web", "198.51.100.10")
	// Same key, other ports: joins the address, whether asked or not.
	h.svc(ns, "tls", annotate(api.AnnotationAllowSharedIP, "k"), ports(443))
	h.svc(ns, "dns", annotate(api.MetalLBAnnotationAllowSharedIP, "k"), ports(53), annotate(api.AnnotationLoadBalancerIPs, "198.51.100.10"))
	waitIngress(t, ns, "tls", "198.51.100.10")
	waitIngress(t, ns, "dns", "198.51.100.10")
	// Each refusal says why.
	h.svc(ns, "clash", annotate(api.AnnotationAllowSharedIP, "k"), ports(80), annotate(api.AnnotationLoadBalancerIPs, "198.51.100.10"))
	waitEvent(t, ns, "clash", api.EventAllocationFailed, "both use port TCP/80")
	h.svc(ns, "other-key", annotate(api.AnnotationAllowSharedIP, "j"), ports(8080), annotate(api.AnnotationLoadBalancerIPs, "198.51.100.10"))
	waitEvent(t, ns, "other-key", api.EventAllocationFailed, `sharing key "k" differs`)
	h.svc(ns, "local", annotate(api.AnnotationAllowSharedIP, "k"), ports(9090), annotate(api.AnnotationLoadBalancerIPs, "198.51.100.10"),
		func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal })
	waitEvent(t, ns, "local", api.EventAllocationFailed, "externalTrafficPolicy Cluster")
	h.svc(ns, "loner", ports(9091), annotate(api.AnnotationLoadBalancerIPs, "198.51.100.10"))
	waitEvent(t, ns, "loner", api.EventAllocationFailed, "this Service does not allow sharing")
}

func TestDualStack(t *testing.T) {
	h := newHarness(t, "dual.ironlb.io/test", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.20/31, 2001:db8:100::20/127]}\n")
	ns := env.Namespace(t)
	require := corev1.IPFamilyPolicyRequireDualStack
	prefer := corev1.IPFamilyPolicyPreferDualStack
	h.svc(ns, "dual", func(s *corev1.Service) { s.Spec.IPFamilyPolicy = &require })
	waitIngress(t, ns, "dual", "198.51.100.20", "2001:db8:100::20")
	h.svc(ns, "v6-first", func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = &prefer
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
	})
	waitIngress(t, ns, "v6-first", "2001:db8:100::21", "198.51.100.21")
	h.svc(ns, "v6", func(s *corev1.Service) { s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol} })
	waitEvent(t, ns, "v6", api.EventAllocationFailed, "IPv6", "no free")
}

func TestExhaustionAndRecovery(t *testing.T) {
	h := newHarness(t, "exhaust.ironlb.io/test", "address-pools:\n- {name: tiny, protocol: layer2, addresses: [198.51.100.30/31]}\n")
	ns := env.Namespace(t)
	// One at a time: created together, a and b are allocated by
	// concurrent workers in either order.
	h.svc(ns, "a")
	waitIngress(t, ns, "a", "198.51.100.30")
	h.svc(ns, "b")
	waitIngress(t, ns, "b", "198.51.100.31")
	h.svc(ns, "c")
	waitEvent(t, ns, "c", api.EventAllocationFailed, `no free IPv4 address left in pool "tiny"`)
	// Deleting a Service frees its address, and the waiting one gets it
	// without being touched.
	if err := env.Client.CoreV1().Services(ns).Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitIngress(t, ns, "c", "198.51.100.30")
	// Growing the pool serves the next one.
	h.svc(ns, "d")
	waitEvent(t, ns, "d", api.EventAllocationFailed, "no free")
	h.setConfig("address-pools:\n- {name: tiny, protocol: layer2, addresses: [198.51.100.30/30]}\n")
	// 198.51.100.30/30 is .28-.31: the lowest free address is .28.
	waitIngress(t, ns, "d", "198.51.100.28")
}

func TestClassAndTypeChange(t *testing.T) {
	h := newHarness(t, "class.ironlb.io/test", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.40/29]}\n")
	ns := env.Namespace(t)
	other := "other.example.com/lb"
	h.svc(ns, "foreign", func(s *corev1.Service) { s.Spec.LoadBalancerClass = &other })
	h.svc(ns, "classless", func(s *corev1.Service) { s.Spec.LoadBalancerClass = nil })
	h.svc(ns, "mine")
	waitIngress(t, ns, "mine", "198.51.100.40")
	time.Sleep(500 * time.Millisecond)
	if got := ingress(t, ns, "foreign"); got != nil {
		t.Errorf("Service of another class got %v", got)
	}
	if got := ingress(t, ns, "classless"); got != nil {
		t.Errorf("classless Service got %v from a controller with --lb-class", got)
	}
	// LoadBalancer -> ClusterIP releases the address and clears the status.
	ctx := context.Background()
	s, err := env.Client.CoreV1().Services(ns).Get(ctx, "mine", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Type = corev1.ServiceTypeClusterIP
	s.Spec.LoadBalancerClass = nil
	s.Spec.ExternalTrafficPolicy = ""
	for i := range s.Spec.Ports {
		s.Spec.Ports[i].NodePort = 0
	}
	if _, err := env.Client.CoreV1().Services(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitIngress(t, ns, "mine")
	h.svc(ns, "next")
	waitIngress(t, ns, "next", "198.51.100.40")
}

// Bad configs while Services hold addresses: each is refused whole with a
// Warning Event, and no address moves.
func TestBadConfigKeepsAddresses(t *testing.T) {
	good := "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.50-198.51.100.55]}\n- {name: q, protocol: layer2, addresses: [198.51.100.60/32]}\n"
	h := newHarness(t, "badcfg.ironlb.io/test", good)
	ns := env.Namespace(t)
	h.svc(ns, "a")
	h.svc(ns, "b", annotate(api.AnnotationAddressPool, "q"))
	waitIngress(t, ns, "a", "198.51.100.50")
	waitIngress(t, ns, "b", "198.51.100.60")
	cases := []struct{ name, text, want string }{
		{"invalid yaml", "address-pools: [", "invalid YAML"},
		{"unknown key", "address-pools:\n- {name: p, protocol: layer2, adresses: [198.51.100.50/32]}\n", `did you mean "addresses"`},
		{"bgp", "address-pools:\n- {name: p, protocol: bgp, addresses: [198.51.100.50/32]}\n", "BGP is not supported"},
		{"overlap", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.48/29, 198.51.100.52/30]}\n- {name: q, protocol: layer2, addresses: [198.51.100.60/32]}\n", "overlaps"},
		{"takes an address away", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.51-198.51.100.55]}\n", ns + "/a holds 198.51.100.50"},
		{"drops a pool in use", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.50-198.51.100.55]}\n", ns + "/b holds 198.51.100.60"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.setConfig(tc.text)
			waitEvent(t, h.ns, "config", api.EventConfigRejected, tc.want)
			if got := ingress(t, ns, "a"); !slices.Equal(got, []string{"198.51.100.50"}) {
				t.Errorf("a has %v after a refused config", got)
			}
			if got := ingress(t, ns, "b"); !slices.Equal(got, []string{"198.51.100.60"}) {
				t.Errorf("b has %v after a refused config", got)
			}
		})
	}
	// The last good config is still in force: a new Service gets .51.
	h.svc(ns, "c")
	waitIngress(t, ns, "c", "198.51.100.51")
}

// Restart: Services created and deleted while the controller is down; on
// restart nobody moves, the new ones get free addresses, nothing collides,
// and unchanged Services cost no write.
func TestRestart(t *testing.T) {
	const n = 200
	h := newHarness(t, "restart.ironlb.io/test", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.0/24]}\n- {name: v6, protocol: layer2, auto-assign: false, addresses: ['2001:db8:100::/120']}\n")
	ns := env.Namespace(t)
	parallel(t, n, func(i int) { h.svc(ns, fmt.Sprint("s", i)) })
	before := map[string]string{}
	eventually(t, "all Services assigned", func() (bool, string) {
		list, _ := env.Client.CoreV1().Services(ns).List(context.Background(), metav1.ListOptions{})
		for _, s := range list.Items {
			if len(s.Status.LoadBalancer.Ingress) == 1 {
				before[s.Name] = s.Status.LoadBalancer.Ingress[0].IP
			}
		}
		return len(before) == n, fmt.Sprint(len(before))
	})
	h.stop()
	// While it is down: delete 20, create 20 new ones.
	for i := range 20 {
		if err := env.Client.CoreV1().Services(ns).Delete(context.Background(), fmt.Sprint("s", i*10), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		delete(before, fmt.Sprint("s", i*10))
		h.svc(ns, fmt.Sprint("new", i))
	}
	h.start()
	after := map[string]string{}
	eventually(t, "new Services assigned", func() (bool, string) {
		clear(after)
		list, _ := env.Client.CoreV1().Services(ns).List(context.Background(), metav1.ListOptions{})
		for _, s := range list.Items {
			if len(s.Status.LoadBalancer.Ingress) == 1 {
				after[s.Name] = s.Status.LoadBalancer.Ingress[0].IP
			}
		}
		return len(after) == n, fmt.Sprint(len(after))
	})
	owners := map[string]string{}
	for name, ip := range after {
		if prev, ok := owners[ip]; ok {
			t.Errorf("%s given to both %s and %s", ip, prev, name)
		}
		owners[ip] = name
		if old, ok := before[name]; ok && old != ip {
			t.Errorf("%s moved from %s to %s across a restart", name, old, ip)
		}
	}
	// Only the 20 new Services were written.
	time.Sleep(time.Second)
	if w := h.ctrl.Metrics().StatusWrites(); w != 20 {
		t.Errorf("restart made %v status writes, want 20 (one per new Service)", w)
	}
}

// A missing ConfigMap means no pools: addresses stay, new Services wait.
func TestMissingConfigMap(t *testing.T) {
	h := newHarness(t, "missing.ironlb.io/test", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.70/30]}\n")
	ns := env.Namespace(t)
	h.svc(ns, "a")
	waitIngress(t, ns, "a", "198.51.100.68")
	if err := env.Client.CoreV1().ConfigMaps(h.ns).Delete(context.Background(), "config", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the controller to notice", func() (bool, string) {
		return testutilGauge(h.ctrl.Metrics().stale) == 1, ""
	})
	h.svc(ns, "b")
	time.Sleep(time.Second)
	if got := ingress(t, ns, "b"); got != nil {
		t.Errorf("b got %v without a config", got)
	}
	if got := ingress(t, ns, "a"); !slices.Equal(got, []string{"198.51.100.68"}) {
		t.Errorf("a has %v after the ConfigMap was deleted", got)
	}
	h.setConfig("address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.70/30]}\n")
	waitIngress(t, ns, "b", "198.51.100.69")
}

// A restart under a config that no longer covers an address keeps the
// address and says so, instead of moving a working Service.
func TestRestartKeepsUncoveredAddress(t *testing.T) {
	h := newHarness(t, "pinned.ironlb.io/test", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.80/30]}\n")
	ns := env.Namespace(t)
	h.svc(ns, "a")
	waitIngress(t, ns, "a", "198.51.100.80")
	h.stop()
	// Changed while no controller could refuse it.
	h.setConfig("address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.84/30]}\n")
	h.start()
	waitEvent(t, ns, "a", api.EventAllocationFailed, "198.51.100.80", "kept until the config covers it")
	h.svc(ns, "b")
	waitIngress(t, ns, "b", "198.51.100.84")
	if got := ingress(t, ns, "a"); !slices.Equal(got, []string{"198.51.100.80"}) {
		t.Errorf("a has %v, want its old address kept", got)
	}
	// Once the config covers it again it is an ordinary assignment, and
	// the config can no longer drop it.
	h.setConfig("address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.80/29]}\n")
	waitEvent(t, h.ns, "config", api.EventConfigLoaded, "8 addresses")
	h.setConfig("address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.84/30]}\n")
	waitEvent(t, h.ns, "config", api.EventConfigRejected, ns+"/a holds 198.51.100.80")
}

func testutilGauge(g interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	g.Write(&m)
	return m.GetGauge().GetValue()
}

func TestMemberlistSecret(t *testing.T) {
	ns := env.Namespace(t)
	ctx := context.Background()
	created, err := EnsureMemberlistSecret(ctx, env.Client, ns)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	s, err := env.Client.CoreV1().Secrets(ns).Get(ctx, api.MemberlistSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := s.Data[api.MemberlistSecretKey]
	if len(key) != 32 {
		t.Fatalf("key has %d bytes, want 32", len(key))
	}
	created, err = EnsureMemberlistSecret(ctx, env.Client, ns)
	if err != nil || created {
		t.Fatalf("second call: created=%v err=%v", created, err)
	}
	s, _ = env.Client.CoreV1().Secrets(ns).Get(ctx, api.MemberlistSecret, metav1.GetOptions{})
	if string(s.Data[api.MemberlistSecretKey]) != string(key) {
		t.Error("the key was overwritten")
	}
}

func parallel(t *testing.T, n int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() { defer wg.Done(); defer func() { <-sem }(); f(i) }()
	}
	wg.Wait()
}
