//go:build integration

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/hack/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }

type replica struct {
	cmd             *exec.Cmd
	metrics, health string
	log             *os.File
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startReplica(t *testing.T, bin, ns, class string, i int) *replica {
	r := &replica{metrics: freeAddr(t), health: freeAddr(t)}
	var err error
	r.log, err = os.Create(filepath.Join(t.TempDir(), fmt.Sprintf("replica%d.log", i)))
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(bin, "--kubeconfig", env.Kubeconfig, "--namespace", ns, "--lb-class", class,
		"--metrics-addr", r.metrics, "--health-addr", r.health, "-v", "2")
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Kill()
			r.cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(r.log.Name())
			t.Logf("replica %d log:\n%s", i, b)
		}
	})
	return r
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Two replicas: one Lease holder allocates, the standby writes nothing;
// when the leader stops, the standby takes over. Both serve probes, and the
// leader's metrics describe its pools.
func TestLeaderElection(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "controller")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx := context.Background()
	ns := env.Namespace(t)
	class := "leader.ironlb.io/test"
	_, err := env.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "config"},
		Data:       map[string]string{"config": "address-pools:\n- {name: lead, protocol: layer2, addresses: [198.51.100.90/31]}\n"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reps := []*replica{startReplica(t, bin, ns, class, 0), startReplica(t, bin, ns, class, 1)}

	var holder string
	waitFor(t, "a Lease holder", func() bool {
		l, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, "ironlb-controller", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return false
		}
		holder = *l.Spec.HolderIdentity
		return true
	})
	svcNS := env.Namespace(t)
	mkSvc := func(name string) {
		_, err := env.Client.CoreV1().Services(svcNS).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class,
				Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	ingress := func(name string) string {
		s, err := env.Client.CoreV1().Services(svcNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
			return ""
		}
		return s.Status.LoadBalancer.Ingress[0].IP
	}
	mkSvc("first")
	waitFor(t, "first to be assigned", func() bool { return ingress("first") == "198.51.100.90" })

	// Which replica leads? The one whose metrics show the pool in use.
	var leader, standby *replica
	waitFor(t, "the leader's metrics", func() bool {
		for i, r := range reps {
			_, body := get("http://" + r.metrics + "/metrics")
			if strings.Contains(body, `ironlb_pool_addresses_in_use{family="IPv4",pool="lead"} 1`) {
				leader, standby = r, reps[1-i]
				return true
			}
		}
		return false
	})
	if _, body := get("http://" + standby.metrics + "/metrics"); !strings.Contains(body, "ironlb_status_writes_total 0") {
		t.Errorf("the standby wrote status:\n%s", grep(body, "ironlb_"))
	}
	for _, r := range reps {
		if code, body := get("http://" + r.health + "/readyz"); code != 200 {
			t.Errorf("/readyz = %d %q", code, body)
		}
		if code, _ := get("http://" + r.health + "/healthz"); code != 200 {
			t.Errorf("/healthz = %d", code)
		}
	}
	for _, want := range []string{`ironlb_pool_addresses_total{family="IPv4",pool="lead"} 2`, `ironlb_pool_addresses_free{family="IPv4",pool="lead"} 1`, "ironlb_config_loaded 1", "ironlb_config_stale 0", "ironlb_allocations_total 1"} {
		if _, body := get("http://" + leader.metrics + "/metrics"); !strings.Contains(body, want) {
			t.Errorf("leader metrics lack %q:\n%s", want, grep(body, "ironlb_"))
		}
	}

	// SIGTERM the leader: it releases the Lease and the standby takes over,
	// restoring "first" and serving "second".
	leader.cmd.Process.Signal(syscall.SIGTERM)
	if err := leader.cmd.Wait(); err != nil {
		t.Errorf("leader exit after SIGTERM: %v", err)
	}
	start := time.Now()
	mkSvc("second")
	waitFor(t, "the standby to take over", func() bool { return ingress("second") == "198.51.100.91" })
	t.Logf("takeover after SIGTERM: %v (holder was %s)", time.Since(start).Round(time.Millisecond), holder)
	if got := ingress("first"); got != "198.51.100.90" {
		t.Errorf("first moved to %q across the takeover", got)
	}
}

func grep(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
