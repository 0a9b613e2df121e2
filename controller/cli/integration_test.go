//go:build integration

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/hack/repo"
	"github.com/ironlb/ironlb/hack/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }

// fixture is a namespace of Services in every state the plugin describes,
// with their conditions and Events written as the controller and the
// speakers write them, and ironlb's ConfigMap in the same namespace.
type fixture struct {
	ns  string
	now time.Time
	// announcedAt and the nodeAssigned times, truncated to seconds as the
	// API stores them.
	movedAt time.Time
}

const poolConfig = `address-pools:
- name: lab
  protocol: layer2
  addresses: [198.51.100.100-198.51.100.109]
- name: lab6
  protocol: layer2
  auto-assign: false
  addresses: ['2001:db8:100::/120']
`

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{ns: env.Namespace(t), now: time.Now().Truncate(time.Second)}
	f.movedAt = f.now.Add(-2 * time.Minute)
	c := env.Client.CoreV1()
	if _, err := c.ConfigMaps(f.ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "config"},
		Data:       map[string]string{api.ConfigKey: poolConfig},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	mk := func(name string, mutate func(*corev1.Service)) *corev1.Service {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeLoadBalancer,
				Selector: map[string]string{"app": name},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
			},
		}
		if mutate != nil {
			mutate(svc)
		}
		got, err := c.Services(f.ns).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating Service %s: %v", name, err)
		}
		return got
	}
	setStatus := func(svc *corev1.Service, ips []string, cond *metav1.Condition) {
		for _, ip := range ips {
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
		if cond != nil {
			svc.Status.Conditions = []metav1.Condition{*cond}
		}
		if _, err := c.Services(f.ns).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("status of %s: %v", svc.Name, err)
		}
	}
	event := func(svc *corev1.Service, component, typ, reason, msg string, at time.Time) {
		e := &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: svc.Name + "-"},
			InvolvedObject: corev1.ObjectReference{
				Kind: "Service", APIVersion: "v1", Namespace: f.ns, Name: svc.Name, UID: svc.UID,
			},
			Reason: reason, Message: msg, Type: typ, Count: 1,
			Source:         corev1.EventSource{Component: component},
			FirstTimestamp: metav1.NewTime(at), LastTimestamp: metav1.NewTime(at),
		}
		if _, err := c.Events(f.ns).Create(ctx, e, metav1.CreateOptions{}); err != nil {
			t.Fatalf("event on %s: %v", svc.Name, err)
		}
	}

	announced := mk("announced", func(s *corev1.Service) {
		pol := corev1.IPFamilyPolicyPreferDualStack
		s.Spec.IPFamilyPolicy = &pol
		s.Annotations = map[string]string{api.AnnotationAddressPool: "lab"}
	})
	setStatus(announced, []string{"198.51.100.100"}, &metav1.Condition{
		Type: api.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: api.ReasonAnnounced,
		LastTransitionTime: metav1.NewTime(f.now.Add(-time.Hour)),
		Message: api.FormatAnnouncements([]api.Announcement{{
			IP: netip.MustParseAddr("198.51.100.100"), Node: "node-1", Interface: "eth0", MAC: "02:00:00:00:00:01",
		}}),
	})
	event(announced, "ironlb-controller", corev1.EventTypeNormal, api.EventIPAllocated, `Assigned 198.51.100.100 from pool "lab"`, f.now.Add(-time.Hour))

	moved := mk("moved", nil)
	setStatus(moved, []string{"198.51.100.101"}, nil)
	event(moved, "ironlb-speaker", corev1.EventTypeNormal, api.EventNodeAssigned, `announcing from node "node-1" with protocol "layer2"`, f.now.Add(-10*time.Minute))
	event(moved, "ironlb-speaker", corev1.EventTypeNormal, api.EventNodeAssigned, `announcing from node "node-2" with protocol "layer2"`, f.movedAt)

	noNode := mk("no-node", nil)
	setStatus(noNode, []string{"198.51.100.102"}, &metav1.Condition{
		Type: api.ConditionAnnounced, Status: metav1.ConditionFalse, Reason: api.ReasonNoEligibleNode,
		LastTransitionTime: metav1.NewTime(f.now.Add(-5 * time.Minute)),
		Message:            `no Ready node with a speaker matches the node-selectors of pool "lab"`,
	})

	for i := range 6 {
		s := mk(fmt.Sprintf("filler-%d", i), nil)
		setStatus(s, []string{fmt.Sprintf("198.51.100.%d", 103+i)}, nil)
	}

	pending := mk("pending", nil)
	event(pending, "ironlb-controller", corev1.EventTypeWarning, api.EventAllocationFailed, `no address available: pool "lab" is exhausted (10 of 10 in use)`, f.now.Add(-30*time.Second))

	mk("other-class", func(s *corev1.Service) {
		class := "example.com/other"
		s.Spec.LoadBalancerClass = &class
	})
	mk("plain", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP })
	return f
}

func (f *fixture) options(out, errOut *bytes.Buffer, output string) Options {
	return Options{
		Namespace: f.ns, IronlbNamespace: f.ns, ConfigName: "config", Output: output,
		Out: out, ErrOut: errOut, Now: func() time.Time { return f.now },
	}
}

// run calls one subcommand's Run function in-process.
func run(t *testing.T, c *Clients, fn func(context.Context, *Clients, Options) error, o Options) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return fn(ctx, c, o)
}

func clientsFor(t *testing.T, cfg *rest.Config) *Clients {
	t.Helper()
	c, err := NewClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPlugin(t *testing.T) {
	f := setup(t)
	admin := clientsFor(t, env.Config)

	wantStatus := []AddressStatus{
		{Namespace: f.ns, Service: "announced", Address: "198.51.100.100", Pool: "lab", Node: "node-1", Interface: "eth0", MAC: "02:00:00:00:00:01", Announced: "True", Source: SourceCondition},
	}
	for i := range 6 {
		wantStatus = append(wantStatus, AddressStatus{Namespace: f.ns, Service: fmt.Sprintf("filler-%d", i), Address: fmt.Sprintf("198.51.100.%d", 103+i), Pool: "lab", Announced: "Unknown", Source: SourceNone})
	}
	wantStatus = append(wantStatus,
		AddressStatus{Namespace: f.ns, Service: "moved", Address: "198.51.100.101", Pool: "lab", Node: "node-2", Announced: "True", Source: SourceEvent,
			LastMove: &Move{From: "node-1", To: "node-2", At: f.movedAt}},
		AddressStatus{Namespace: f.ns, Service: "no-node", Address: "198.51.100.102", Pool: "lab", Announced: "False", Reason: api.ReasonNoEligibleNode, Source: SourceCondition},
		AddressStatus{Namespace: f.ns, Service: "pending", Announced: "Unknown", Source: SourceNone},
	)

	statusJSON := func(t *testing.T, c *Clients) []AddressStatus {
		var out, errOut bytes.Buffer
		if err := run(t, c, func(ctx context.Context, c *Clients, o Options) error { return Status(ctx, c, o, "") }, f.options(&out, &errOut, "json")); err != nil {
			t.Fatalf("status: %v\n%s", err, &errOut)
		}
		var got []AddressStatus
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, &out)
		}
		for i := range got {
			if got[i].LastMove != nil {
				got[i].LastMove.At = got[i].LastMove.At.Local()
			}
		}
		return got
	}

	t.Run("status", func(t *testing.T) {
		if diff := cmp.Diff(wantStatus, statusJSON(t, admin)); diff != "" {
			t.Errorf("status -o json (-want +got):\n%s", diff)
		}
		var out, errOut bytes.Buffer
		if err := run(t, admin, func(ctx context.Context, c *Clients, o Options) error { return Status(ctx, c, o, "") }, f.options(&out, &errOut, "")); err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl ironlb status:\n%s", &out)
		for _, line := range [][]string{
			{"announced", "198.51.100.100", "lab", "node-1", "eth0", "02:00:00:00:00:01", "condition", "-"},
			{"moved", "198.51.100.101", "lab", "node-2", "-", "-", "event", "node-1->node-2", "2m", "ago"},
			{"no-node", "198.51.100.102", "lab", "<NoEligibleNode>"},
			{"pending", "<pending>"},
		} {
			if !hasRow(out.String(), line) {
				t.Errorf("status table has no row %q:\n%s", line, &out)
			}
		}
		if strings.Contains(out.String(), "other-class") || strings.Contains(out.String(), "plain") {
			t.Errorf("status lists Services ironlb does not handle:\n%s", &out)
		}
		// One Service by name.
		out.Reset()
		if err := run(t, admin, func(ctx context.Context, c *Clients, o Options) error { return Status(ctx, c, o, "moved") }, f.options(&out, &errOut, "json")); err != nil {
			t.Fatal(err)
		}
		var one []AddressStatus
		if err := json.Unmarshal(out.Bytes(), &one); err != nil || len(one) != 1 || one[0].Service != "moved" {
			t.Errorf("status moved: %v %+v", err, one)
		}
		err := run(t, admin, func(ctx context.Context, c *Clients, o Options) error { return Status(ctx, c, o, "other-class") }, f.options(&out, &errOut, ""))
		if err == nil || !strings.Contains(err.Error(), "not handled by ironlb") {
			t.Errorf("status other-class: %v, want 'not handled by ironlb'", err)
		}
	})

	wantPools := func(t *testing.T, c *Clients) {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := run(t, c, Pools, f.options(&out, &errOut, "json")); err != nil {
			t.Fatalf("pools: %v", err)
		}
		var rep PoolsReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		holders := []string{f.ns + "/announced"}
		for i := range 6 {
			holders = append(holders, fmt.Sprintf("%s/filler-%d", f.ns, i))
		}
		holders = append(holders, f.ns+"/moved", f.ns+"/no-node")
		want := PoolsReport{Pools: []PoolUsage{
			{Pool: "lab", Family: "IPv4", Size: "10", Used: 9, Free: "1", Percent: 90, Full: true, AutoAssign: true, Services: holders},
			{Pool: "lab6", Family: "IPv6", Size: "256", Used: 0, Free: "256"},
		}}
		if diff := cmp.Diff(want, rep); diff != "" {
			t.Errorf("pools -o json (-want +got):\n%s", diff)
		}
	}
	t.Run("pools", func(t *testing.T) {
		wantPools(t, admin)
		var out, errOut bytes.Buffer
		if err := run(t, admin, Pools, f.options(&out, &errOut, "")); err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl ironlb pools:\n%s", &out)
		if !hasRow(out.String(), []string{"lab", "IPv4", "10", "9", "1", "90%", "(>=90%!)", "true", "<all>"}) ||
			!hasRow(out.String(), []string{"lab6", "IPv6", "256", "0", "256", "0%", "false", "<all>", "<none>"}) {
			t.Errorf("pools table:\n%s", &out)
		}
	})

	whyText := func(t *testing.T, c *Clients, name string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := run(t, c, func(ctx context.Context, c *Clients, o Options) error { return Why(ctx, c, o, name) }, f.options(&out, &errOut, "")); err != nil {
			t.Fatalf("why %s: %v", name, err)
		}
		return out.String()
	}
	whyCases := []struct {
		svc  string
		want []string
	}{
		{"pending", []string{"has no address", "AllocationFailed", `pool "lab" is exhausted (10 of 10 in use)`, "30s ago"}},
		{"no-node", []string{"198.51.100.102", "not announced", "reason NoEligibleNode", "node-selectors match no Ready node", `The speaker says: no Ready node with a speaker matches the node-selectors of pool "lab"`}},
		{"announced", []string{"It is announced", "198.51.100.100 by node-1 on eth0 (02:00:00:00:00:01)", "ironlb sees nothing wrong"}},
		{"moved", []string{"nodeAssigned Event (2m ago) says node node-2 announces it"}},
		{"other-class", []string{"loadBalancerClass example.com/other", "--lb-class=example.com/other"}},
		{"plain", []string{"of type ClusterIP", "only to Services of type LoadBalancer"}},
	}
	t.Run("why", func(t *testing.T) {
		for _, tc := range whyCases {
			got := whyText(t, admin, tc.svc)
			t.Logf("kubectl ironlb why %s:\n%s", tc.svc, got)
			if strings.Count(strings.TrimSpace(got), "\n") != 0 {
				t.Errorf("why %s: want one paragraph, got\n%s", tc.svc, got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("why %s lacks %q:\n%s", tc.svc, w, got)
				}
			}
		}
		var out, errOut bytes.Buffer
		err := run(t, admin, func(ctx context.Context, c *Clients, o Options) error { return Why(ctx, c, o, "nope") }, f.options(&out, &errOut, ""))
		if err == nil || !strings.Contains(err.Error(), "nope not found") {
			t.Errorf("why nope: %v", err)
		}
	})

	t.Run("why without ConfigMap", func(t *testing.T) {
		var out, errOut bytes.Buffer
		o := f.options(&out, &errOut, "")
		o.IronlbNamespace = "no-such-namespace"
		if err := Why(context.Background(), admin, o, "pending"); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "the ConfigMap no-such-namespace/config does not exist") {
			t.Errorf("why with no ConfigMap:\n%s", &out)
		}
	})

	// A cluster viewer: the built-in ClusterRole view, through
	// impersonation by the admin. Every read subcommand must work with it
	// and say the same as with the admin.
	t.Run("viewer RBAC", func(t *testing.T) {
		ctx := context.Background()
		user := "ironlb-viewer-" + f.ns
		// view is an aggregated ClusterRole: kube-controller-manager's
		// aggregation controller copies into it the rules of
		// system:aggregate-to-view (and of other roles labelled for it).
		// The test control plane runs no controller-manager, so the user
		// is bound to both: view itself, and the rules it carries on a
		// real cluster.
		for _, role := range []string{"view", "system:aggregate-to-view"} {
			if _, err := env.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: user + "-" + strings.ReplaceAll(role, ":", "-")},
				RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
				Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
			}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
		viewer := clientsFor(t, cfg)
		// The binding takes effect when the authorizer's cache sees it.
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := viewer.Kube.CoreV1().Services(f.ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("viewer still cannot list Services: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// The identity really is read-only.
		_, err := viewer.Kube.CoreV1().Services(f.ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "viewer-write"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 1}}},
		}, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("viewer created a Service (err %v); the test identity is not read-only", err)
		}
		if diff := cmp.Diff(wantStatus, statusJSON(t, viewer)); diff != "" {
			t.Errorf("status as viewer (-want +got):\n%s", diff)
		}
		wantPools(t, viewer)
		for _, tc := range whyCases {
			if a, v := whyText(t, admin, tc.svc), whyText(t, viewer, tc.svc); a != v {
				t.Errorf("why %s differs for the viewer:\nadmin:  %s\nviewer: %s", tc.svc, a, v)
			}
		}
	})

	t.Run("import-metallb from the cluster, dry run", func(t *testing.T) {
		mlbNS := env.Namespace(t)
		applyMetalLBCRDs(t)
		manifest := fmt.Sprintf(`apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: first-pool, namespace: %[1]s}
spec:
  addresses: [198.51.100.100-198.51.100.105]
  autoAssign: true
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2, namespace: %[1]s}
spec:
  ipAddressPools: [first-pool]
  interfaces: [eth0]
`, mlbNS)
		p := filepath.Join(plainTempDir(t), "metallb.yaml")
		if err := os.WriteFile(p, []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		env.Kubectl(t, "apply", "-f", p)

		var out, errOut bytes.Buffer
		o := f.options(&out, &errOut, "")
		imp := ImportOptions{FromCluster: true, MetalLBNamespace: mlbNS}
		if err := ImportMetallb(context.Background(), admin, o, imp); err != nil {
			t.Fatalf("import-metallb --from-cluster: %v\n%s", err, &errOut)
		}
		t.Logf("kubectl ironlb import-metallb --from-cluster:\n%s%s", &out, &errOut)
		for _, w := range []string{"kind: ConfigMap", "name: first-pool", "198.51.100.100-198.51.100.105", "- eth0"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("ConfigMap lacks %q:\n%s", w, &out)
			}
		}

		out.Reset()
		errOut.Reset()
		imp.DryRun = true
		o.Output = "json"
		err := ImportMetallb(context.Background(), admin, o, imp)
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Code != 1 || !strings.Contains(ee.Msg, "3 address(es) would be lost") {
			t.Fatalf("dry run: %v, want exit 1 naming the 3 addresses outside the MetalLB pool (.106-.108)", err)
		}
		var vs []Verdict
		if err := json.Unmarshal(out.Bytes(), &vs); err != nil {
			t.Fatal(err)
		}
		keeps := map[string]bool{}
		for _, v := range vs {
			if v.Address != "" {
				keeps[v.Address] = v.Keeps
			}
		}
		want := map[string]bool{}
		for i := 100; i <= 108; i++ {
			want[fmt.Sprintf("198.51.100.%d", i)] = i <= 105
		}
		if diff := cmp.Diff(want, keeps); diff != "" {
			t.Errorf("dry run verdicts by address (-want +got):\n%s\n%s", diff, &out)
		}
		out.Reset()
		errOut.Reset()
		o.Output = ""
		if err := ImportMetallb(context.Background(), admin, o, imp); !errors.As(err, &ee) {
			t.Fatalf("dry run as a table: %v", err)
		}
		if !hasRow(out.String(), []string{f.ns, "filler-3", "198.51.100.106", "-", "LOSES:"}) || !hasRow(out.String(), []string{f.ns, "announced", "198.51.100.100", "first-pool", "keeps"}) {
			t.Errorf("dry run table:\n%s", &out)
		}
		t.Logf("kubectl ironlb import-metallb --from-cluster --dry-run:\n%s%s", &out, &errOut)
	})

	t.Run("binary", func(t *testing.T) {
		bin := buildPlugin(t)
		cfgFile := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(cfgFile, []byte(poolConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		// check-config needs no cluster.
		stdout, stderr, code := runBinary(t, bin, nil, "check-config", cfgFile)
		if code != 0 || !strings.Contains(stdout, `pool "lab": 10 addresses, IPv4`) || !strings.Contains(stdout, `pool "lab6": 256 addresses, IPv6, auto-assign off`) {
			t.Errorf("check-config: exit %d\n%s%s", code, stdout, stderr)
		}
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(bad, []byte("address-pools:\n- {name: a, protocol: bgp, addresses: [10.0.0.0/24]}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, stderr, code := runBinary(t, bin, nil, "check-config", bad); code != 1 || !strings.Contains(stderr, "BGP is not supported") {
			t.Errorf("check-config of a bad file: exit %d, stderr %s", code, stderr)
		}

		// $KUBECONFIG, as kubectl reads it, and kubectl's plugin lookup on
		// PATH: `kubectl ironlb` runs the binary.
		kenv := []string{"KUBECONFIG=" + env.Kubeconfig, "PATH=" + filepath.Dir(bin) + ":" + os.Getenv("PATH")}
		stdout, stderr, code = runBinary(t, env.KubectlPath, kenv, "ironlb", "status", "-n", f.ns, "--ironlb-namespace", f.ns, "-o", "json")
		if code != 0 {
			t.Fatalf("kubectl ironlb status: exit %d\n%s", code, stderr)
		}
		var got []AddressStatus
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i].LastMove != nil {
				got[i].LastMove.At = got[i].LastMove.At.Local()
			}
		}
		if diff := cmp.Diff(wantStatus, got); diff != "" {
			t.Errorf("kubectl ironlb status -o json (-want +got):\n%s", diff)
		}
		stdout, _, code = runBinary(t, bin, kenv, "pools", "--ironlb-namespace", f.ns)
		if code != 0 || !hasRow(stdout, []string{"lab", "IPv4", "10", "9", "1", "90%", "(>=90%!)"}) {
			t.Errorf("kubectl-ironlb pools: exit %d\n%s", code, stdout)
		}
		t.Logf("kubectl-ironlb pools:\n%s", stdout)
		stdout, _, code = runBinary(t, bin, kenv, "why", "-n", f.ns, "--ironlb-namespace", f.ns, "pending")
		if code != 0 || !strings.Contains(stdout, `pool "lab" is exhausted`) {
			t.Errorf("kubectl-ironlb why pending: exit %d\n%s", code, stdout)
		}
		// A missing kubeconfig is an error that says so, not a crash.
		_, stderr, code = runBinary(t, bin, []string{"KUBECONFIG=/nonexistent/kubeconfig"}, "status")
		if code != 1 || !strings.Contains(stderr, "error:") {
			t.Errorf("status without a cluster: exit %d, stderr %q", code, stderr)
		}
	})
}

// hasRow reports whether a line of table contains the fields in order,
// each a whole field.
func hasRow(table string, want []string) bool {
	for _, line := range strings.Split(table, "\n") {
		fields := strings.Fields(line)
		i := 0
		for _, f := range fields {
			if i < len(want) && f == want[i] {
				i++
			}
		}
		if i == len(want) && len(want) > 0 && fields[0] == want[0] {
			return true
		}
	}
	return false
}

func buildPlugin(t *testing.T) string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "kubectl-ironlb")
	cmd := exec.Command("go", "build", "-o", bin, "./controller/cmd/kubectl-ironlb")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func runBinary(t *testing.T, bin string, extraEnv []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	t.Fatalf("%s %s: %v", bin, strings.Join(args, " "), err)
	return "", "", -1
}

// applyMetalLBCRDs installs minimal CustomResourceDefinitions for MetalLB's
// two kinds, enough for the API server to store and list them; the real
// CRDs carry a full schema, which the plugin does not depend on.
func applyMetalLBCRDs(t *testing.T) {
	t.Helper()
	var b strings.Builder
	for _, k := range []struct{ kind, plural string }{{"IPAddressPool", "ipaddresspools"}, {"L2Advertisement", "l2advertisements"}} {
		fmt.Fprintf(&b, `---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %[2]s.metallb.io
spec:
  group: metallb.io
  scope: Namespaced
  names: {kind: %[1]s, listKind: %[1]sList, plural: %[2]s, singular: %[3]s}
  versions:
  - name: v1beta1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
`, k.kind, k.plural, strings.ToLower(k.kind))
	}
	p := filepath.Join(plainTempDir(t), "crds.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	env.Kubectl(t, "apply", "-f", p)
	env.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/ipaddresspools.metallb.io", "crd/l2advertisements.metallb.io")
}

// plainTempDir is a temp dir whose path kubectl -f takes as one file:
// t.TempDir is named after the test, and kubectl splits -f on commas.
func plainTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ironlb-cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
