//go:build cluster

// The real-cluster tier: a control plane and three nodes (containerd,
// kubelet, kube-proxy in iptables mode) in network namespaces, brought up by
// hack/cluster.sh; ironlb installed from manifests/ as a user installs it;
// a LAN client that ARPs and sends HTTP requests through the real
// kube-proxy.
//
//	go test -tags cluster -count=1 -timeout 45m ./hack/e2e/cluster/ -v
//
// Needs root. Without root the tests are skipped, unless CI=true, where that
// is a failure. TestMain brings a fresh cluster up in its own state
// directory (.cache/cluster-e2e, so a `make demo` cluster in .cache/cluster
// can stay up meanwhile) and always takes it down: on return, on
// SIGINT/SIGTERM, and, through a watchdog process, even when the test binary
// dies (a -timeout panic, SIGKILL).
//
// Every client runs inside the cluster's namespaces: kubectl in the control
// plane's (hack/cluster.sh kubectl), probe and curl in the client's
// (hack/cluster.sh exec client).
package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ironlb/ironlb/hack/e2e/harness"
	"github.com/ironlb/ironlb/hack/repo"
)

// Nodes and their fixed MACs (hack/cluster.sh: 02:00:c6:33:64:XX, XX the
// last IPv4 octet in hex).
var (
	nodes   = []string{"n1", "n2", "n3"}
	nodeMAC = map[string]string{"n1": "02:00:c6:33:64:0b", "n2": "02:00:c6:33:64:0c", "n3": "02:00:c6:33:64:0d"}
	nodeIP  = map[string]string{"n1": "198.51.100.11", "n2": "198.51.100.12", "n3": "198.51.100.13"}
)

// h is the cluster as the harness sees it; TestMain fills it in.
var h = &harness.Env{Script: "hack/cluster.sh", NodeMAC: nodeMAC}

const (
	systemNS = "ironlb-system"
	// The backend image (hack/cluster/backend), imported on every node.
	backendImage = "ironlb/backend:v0.1.0"
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "FAIL: the cluster tests need root (network and mount namespaces, cgroups) and CI=true: refusing to skip")
			return 1
		}
		fmt.Fprintln(os.Stderr, "SKIP: the cluster tests need root (network and mount namespaces, cgroups); run them as root")
		return 0
	}
	root, err := repo.Root()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	dir := filepath.Join(root, ".cache/cluster-e2e")
	state := filepath.Join(dir, "state")
	if _, err := os.Stat(state); err == nil {
		fmt.Fprintf(os.Stderr, "FAIL: a cluster is already up in %s; another test run may be using it. Take it down with CLUSTER_DIR=%s hack/cluster.sh down first.\n", dir, dir)
		return 1
	}
	h.Root = root
	h.Vars = []string{"CLUSTER_DIR=" + dir}
	tmp, err := os.MkdirTemp("", "ironlb-cluster-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if err := h.BuildProbe(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}

	// Whatever happens from here on, the cluster goes down.
	down := sync.OnceFunc(func() {
		cmd := h.Command("bash", h.Script, "down")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "hack/cluster.sh down:", err)
		}
	})
	defer down()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "cluster e2e: %v: taking the cluster down\n", s)
		down()
		os.Exit(1)
	}()

	t0 := time.Now()
	up := h.Command("bash", h.Script, "up")
	up.Stdout, up.Stderr = os.Stderr, os.Stderr
	upErr := up.Run()
	if suffix := harness.StateValue(state, "suffix"); suffix != "" {
		if err := h.StartWatchdog(state, suffix); err != nil {
			fmt.Fprintln(os.Stderr, "cluster e2e: cannot start the watchdog:", err)
		}
	}
	if upErr != nil {
		fmt.Fprintln(os.Stderr, "FAIL: hack/cluster.sh up:", upErr)
		return 1
	}
	fmt.Fprintf(os.Stderr, "cluster e2e: cluster up after %.1f s\n", time.Since(t0).Seconds())
	t1 := time.Now()
	if err := install(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: installing ironlb:", err)
		dumpState(os.Stderr)
		return 1
	}
	fmt.Fprintf(os.Stderr, "cluster e2e: ironlb installed, controller and %d speakers Ready after %.1f s\n", len(nodes), time.Since(t1).Seconds())
	return m.Run()
}

// install does what the README tells a user to do, then waits until the
// controller and one speaker per node are Ready.
func install() error {
	// A cluster that has just come up may not have published its root CA
	// (kube-root-ca.crt, which every pod's token volume mounts) or the
	// default ServiceAccounts yet; on a real cluster a user installs into a
	// settled one.
	if err := poll(2*time.Minute, func() error {
		_, err := tryKubectl("", "-n", "default", "get", "configmap/kube-root-ca.crt", "serviceaccount/default")
		return err
	}); err != nil {
		return fmt.Errorf("the cluster did not settle: %w", err)
	}
	if err := warmUp(); err != nil {
		return fmt.Errorf("the cluster did not settle: %w", err)
	}
	if _, err := tryKubectl("", "apply", "-f", filepath.Join(h.Root, "manifests/namespace.yaml"), "-f", filepath.Join(h.Root, "manifests/ironlb.yaml")); err != nil {
		return err
	}
	if _, err := tryKubectl("", "apply", "-f", filepath.Join(h.Root, "hack/demo/address-pools.yaml")); err != nil {
		return err
	}
	return waitSystemReady(5 * time.Minute)
}

// warmUp runs one Pod on every node and removes them again. A kubelet that
// has only just started can fail its first Pods' token volume mounts
// ("failed to sync configmap cache") while its caches fill; those Warnings
// would land on ironlb's Pods, which a user installs into a settled
// cluster.
func warmUp() error {
	const manifest = `apiVersion: v1
kind: Namespace
metadata: {name: e2e-warmup}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: warmup, namespace: e2e-warmup}
spec:
  selector:
    matchLabels: {app: warmup}
  template:
    metadata:
      labels: {app: warmup}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: pause
        image: ironlb/pause:v0.1.0
        imagePullPolicy: IfNotPresent
`
	if _, err := tryKubectl(manifest, "apply", "-f", "-"); err != nil {
		return err
	}
	if _, err := tryKubectl("", "--request-timeout=0", "-n", "e2e-warmup", "rollout", "status", "daemonset/warmup", "--timeout=300s"); err != nil {
		return err
	}
	_, err := tryKubectl("", "--request-timeout=0", "delete", "namespace", "e2e-warmup", "--timeout=180s")
	return err
}

// waitSystemReady waits for the controller Deployment and the speaker
// DaemonSet to be rolled out, with one Ready speaker per node.
func waitSystemReady(wait time.Duration) error {
	timeout := fmt.Sprintf("--timeout=%ds", int(wait.Seconds()))
	for _, obj := range []string{"deployment/controller", "daemonset/speaker"} {
		if _, err := tryKubectl("", "--request-timeout=0", "-n", systemNS, "rollout", "status", obj, timeout); err != nil {
			return err
		}
	}
	return poll(wait, func() error {
		out, err := tryKubectl("", "-n", systemNS, "get", "daemonset/speaker", "-o", "jsonpath={.status.numberReady} {.status.desiredNumberScheduled} {.status.updatedNumberScheduled}")
		if err != nil {
			return err
		}
		if want := fmt.Sprintf("%d %d %d", len(nodes), len(nodes), len(nodes)); strings.TrimSpace(out) != want {
			return fmt.Errorf("speaker DaemonSet ready/desired/updated = %q, want %q", strings.TrimSpace(out), want)
		}
		return nil
	})
}

// dumpState writes what helps to see why the cluster or ironlb is not
// healthy.
func dumpState(w *os.File) {
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", systemNS, "logs", "-l", "app.kubernetes.io/name=ironlb", "--prefix", "--tail=40", "--all-containers"},
	} {
		out, err := tryKubectl("", args...)
		fmt.Fprintf(w, "---- kubectl %s (err %v)\n%s\n", strings.Join(args, " "), err, out)
	}
}

func poll(wait time.Duration, f func() error) error {
	deadline := time.Now().Add(wait)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", wait, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ---- helpers: kubectl ----

// tryKubectl runs kubectl as cluster-admin in the control plane's
// namespace. hack/cluster.sh passes --request-timeout=15s; a later
// --request-timeout in args wins (watches, rollout status, drain).
func tryKubectl(stdin string, args ...string) (string, error) {
	return h.Try(stdin, nil, "bash", append([]string{h.Script, "kubectl"}, args...)...)
}

func kubectl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, err := tryKubectl(stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// script runs hack/cluster.sh with args.
func script(t testing.TB, args ...string) string {
	t.Helper()
	out, err := h.TryScript(args...)
	if err != nil {
		t.Fatalf("hack/cluster.sh %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// nsCount keeps namespace names fresh under -count=N.
var nsCount atomic.Int64

// namespace creates a fresh Kubernetes namespace, deleted (with all in it)
// when the test ends. It first waits for the cluster and ironlb to be
// healthy, so that a test starts from a sound cluster whatever the one
// before it did, and dumps the cluster's state when the test failed.
func namespace(t *testing.T, name string) string {
	t.Helper()
	healthy(t)
	name = fmt.Sprintf("%s-%d", name, nsCount.Add(1))
	kubectl(t, "", "create", "namespace", name)
	t.Cleanup(func() {
		if t.Failed() {
			for _, args := range [][]string{
				{"get", "nodes", "-o", "wide"},
				{"get", "pods", "-A", "-o", "wide"},
				{"-n", name, "get", "events", "--sort-by=.lastTimestamp"},
				{"-n", systemNS, "get", "events", "--sort-by=.lastTimestamp"},
				{"-n", systemNS, "logs", "-l", "app.kubernetes.io/component=speaker", "--prefix", "--tail=40"},
				{"-n", systemNS, "logs", "-l", "app.kubernetes.io/component=controller", "--prefix", "--tail=20"},
			} {
				out, err := tryKubectl("", args...)
				t.Logf("kubectl %s (err %v):\n%s", strings.Join(args, " "), err, out)
			}
			for _, n := range nodes {
				out, err := h.InClient("curl", "-s", "--max-time", "3", "http://"+nodeIP[n]+":7474/metrics")
				var lines []string
				for _, l := range strings.Split(out, "\n") {
					if strings.HasPrefix(l, "ironlb_") {
						lines = append(lines, l)
					}
				}
				t.Logf("speaker metrics on %s (err %v): %s", n, err, strings.Join(lines, "; "))
			}
		}
		// Wait until it is gone: its Pods' shutdown costs CPU on this small
		// machine and should not overlap the next test's measurements.
		if _, err := tryKubectl("", "--request-timeout=0", "delete", "namespace", name, "--timeout=180s"); err != nil {
			t.Logf("deleting namespace %s: %v", name, err)
		}
	})
	return name
}

// healthy waits until every node is Ready and ironlb is rolled out with a
// Ready speaker on every node.
func healthy(t *testing.T) {
	t.Helper()
	if err := poll(3*time.Minute, func() error {
		out, err := tryKubectl("", "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{" "}{end}`)
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(out) {
			if !strings.HasSuffix(f, "=True") {
				return fmt.Errorf("node not Ready: %s", out)
			}
		}
		if n := len(strings.Fields(out)); n != len(nodes) {
			return fmt.Errorf("%d nodes, want %d: %s", n, len(nodes), out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := waitSystemReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
}

// service applies a Service manifest (everything after metadata.namespace)
// and deletes it when the test ends, so its addresses go back to the small
// pool.
func service(t *testing.T, ns, name, rest string) {
	t.Helper()
	manifest := fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\n%s", name, ns, rest)
	kubectl(t, manifest, "apply", "-f", "-")
	t.Cleanup(func() {
		if _, err := tryKubectl("", "-n", ns, "delete", "service", name, "--ignore-not-found", "--wait=false"); err != nil {
			t.Logf("deleting Service %s/%s: %v", ns, name, err)
		}
	})
}

// lbService is a LoadBalancer Service for the backend app, port 80 to 8080.
func lbService(t *testing.T, ns, name, app, policy string) {
	t.Helper()
	service(t, ns, name, fmt.Sprintf(`spec:
  type: LoadBalancer
  externalTrafficPolicy: %s
  selector: {app: %s}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
`, policy, app))
}

// ingress waits for a Service to have n ingress IPs.
func ingress(t *testing.T, ns, name string, n int) []string {
	t.Helper()
	return ingressWithin(t, ns, name, n, time.Minute)
}

func ingressWithin(t *testing.T, ns, name string, n int, wait time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		out, _ := tryKubectl("", "-n", ns, "get", "service", name, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}")
		ips := strings.Fields(out)
		if len(ips) >= n {
			return ips
		}
		if time.Now().After(deadline) {
			ev, _ := tryKubectl("", "-n", ns, "get", "events")
			t.Fatalf("Service %s/%s has ingress %q after %v, want %d addresses; events:\n%s", ns, name, ips, wait, n, ev)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// backend applies a Deployment of the backend image: replicas Pods, at most
// one per node, only on the given nodes (any node when none are given), with
// a readinessProbe on /ready, and waits until it is rolled out.
func backend(t *testing.T, ns, name string, replicas int, on ...string) {
	t.Helper()
	kubectl(t, backendManifest(ns, name, replicas, on...), "apply", "-f", "-")
	rollout(t, ns, "deployment/"+name)
}

func backendManifest(ns, name string, replicas int, on ...string) string {
	nodeAffinity := ""
	if len(on) > 0 {
		nodeAffinity = fmt.Sprintf(`
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {key: kubernetes.io/hostname, operator: In, values: [%s]}`, strings.Join(on, ", "))
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  replicas: %[3]d
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      terminationGracePeriodSeconds: 30
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels: {app: %[1]s}
            topologyKey: kubernetes.io/hostname%[4]s
      containers:
      - name: backend
        image: %[5]s
        imagePullPolicy: IfNotPresent
        command: [/backend]
        args: [--listen=:8080, --drain-delay=5s]
        env:
        - name: NODE_NAME
          valueFrom:
            fieldRef: {fieldPath: spec.nodeName}
        ports:
        - {name: http, containerPort: 8080, protocol: TCP}
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 1
          failureThreshold: 1
`, name, ns, replicas, nodeAffinity, backendImage)
}

// rollout waits for `kubectl rollout status` of obj.
func rollout(t *testing.T, ns, obj string) {
	t.Helper()
	kubectl(t, "", "--request-timeout=0", "-n", ns, "rollout", "status", obj, "--timeout=180s")
}

// podNodes returns the nodes of the Ready pods of app.
func podNodes(t *testing.T, ns, app string) []string {
	t.Helper()
	out := kubectl(t, "", "-n", ns, "get", "pods", "-l", "app="+app, "-o", "json")
	var pods podList
	if err := json.Unmarshal([]byte(out), &pods); err != nil {
		t.Fatal(err)
	}
	var on []string
	for _, p := range pods.Items {
		if p.Metadata.DeletionTimestamp == "" && p.ready() {
			on = append(on, p.Spec.NodeName)
		}
	}
	slices.Sort(on)
	return on
}

// ---- the API objects the tests read (only the fields they use) ----

type objectMeta struct {
	Name              string `json:"name"`
	Namespace         string `json:"namespace"`
	ResourceVersion   string `json:"resourceVersion"`
	DeletionTimestamp string `json:"deletionTimestamp"`
	ManagedFields     []struct {
		Manager     string `json:"manager"`
		Operation   string `json:"operation"`
		Subresource string `json:"subresource"`
		Time        string `json:"time"`
	} `json:"managedFields"`
}

type podList struct {
	Items []pod `json:"items"`
}

type pod struct {
	Metadata objectMeta `json:"metadata"`
	Spec     struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Phase      string `json:"phase"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		ContainerStatuses []struct {
			Name         string `json:"name"`
			Ready        bool   `json:"ready"`
			RestartCount int    `json:"restartCount"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

func (p pod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

type serviceList struct {
	Items []svc `json:"items"`
}

type svc struct {
	Metadata objectMeta `json:"metadata"`
	Spec     struct {
		Type string `json:"type"`
	} `json:"spec"`
	Status struct {
		LoadBalancer struct {
			Ingress []struct {
				IP string `json:"ip"`
			} `json:"ingress"`
		} `json:"loadBalancer"`
	} `json:"status"`
}

func (s svc) key() string { return s.Metadata.Namespace + "/" + s.Metadata.Name }

func (s svc) ips() []string {
	var ips []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}
	return ips
}

type eventList struct {
	Items []event `json:"items"`
}

type event struct {
	Metadata objectMeta `json:"metadata"`
	Type     string     `json:"type"`
	Reason   string     `json:"reason"`
	Message  string     `json:"message"`
	Count    int        `json:"count"`
	Source   struct {
		Component string `json:"component"`
		Host      string `json:"host"`
	} `json:"source"`
	ReportingComponent string `json:"reportingComponent"`
	InvolvedObject     struct {
		Kind      string `json:"kind"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"involvedObject"`
}

// ---- helpers: watching API objects ----

// objWatch is `kubectl get KIND --watch-only --output-watch-events -o json`
// running in the background; each event is stamped when it arrived.
type objWatch struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	evs  []watchEvent
	err  error
}

type watchEvent struct {
	At     time.Time
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// watch starts watching kind (kubectl get args); it ends with the test.
func watch(t *testing.T, args ...string) *objWatch {
	t.Helper()
	w := &objWatch{done: make(chan struct{})}
	full := append([]string{h.Script, "kubectl", "--request-timeout=0", "get"}, args...)
	w.cmd = h.Command("bash", append(full, "--watch-only", "--output-watch-events", "-o", "json")...)
	// kubectl runs under hack/cluster.sh's bash: kill the process group.
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		dec := json.NewDecoder(stdout)
		for {
			var ev watchEvent
			err := dec.Decode(&ev)
			ev.At = time.Now()
			w.mu.Lock()
			if err != nil {
				w.err = err
				w.mu.Unlock()
				return
			}
			w.evs = append(w.evs, ev)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(w.kill)
	return w
}

func (w *objWatch) kill() {
	syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
	}
	w.cmd.Wait()
}

// events returns the events so far.
func (w *objWatch) events() []watchEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]watchEvent(nil), w.evs...)
}

// stop ends the watch and returns what it saw; it fails the test if the
// watch ended early (it would have missed events).
func (w *objWatch) stop(t *testing.T) []watchEvent {
	t.Helper()
	select {
	case <-w.done:
		t.Fatalf("the watch ended early: %v", w.err)
	default:
	}
	w.kill()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]watchEvent(nil), w.evs...)
}

// logPods logs, relative to t0, when each Pod of a Pod watch was created,
// became Ready, was marked for deletion and was gone.
func logPods(t *testing.T, what string, evs []watchEvent, t0 time.Time) {
	t.Helper()
	type seen struct{ ready, deleting bool }
	state := map[string]*seen{}
	for _, e := range evs {
		var p pod
		if err := json.Unmarshal(e.Object, &p); err != nil {
			t.Fatal(err)
		}
		name := p.Metadata.Name
		st := state[name]
		if st == nil {
			st = &seen{}
			state[name] = st
			t.Logf("%s: pod %s on %s: %s at +%.0f ms", what, name, p.Spec.NodeName, strings.ToLower(e.Type), msSince(t0, e.At))
		}
		if r := p.ready(); r != st.ready {
			st.ready = r
			t.Logf("%s: pod %s on %s: Ready=%v at +%.0f ms", what, name, p.Spec.NodeName, r, msSince(t0, e.At))
		}
		if d := p.Metadata.DeletionTimestamp != ""; d && !st.deleting {
			st.deleting = true
			t.Logf("%s: pod %s on %s: terminating at +%.0f ms", what, name, p.Spec.NodeName, msSince(t0, e.At))
		}
		if e.Type == "DELETED" {
			t.Logf("%s: pod %s on %s: gone at +%.0f ms", what, name, p.Spec.NodeName, msSince(t0, e.At))
		}
	}
}

// ---- helpers: what the client sees ----

// switchEvent is a change of the node that answers (or announces) an
// address, as the client's ARP watch saw it.
type switchEvent struct {
	at       time.Time
	from, to string
}

// switches returns, in order, every change of the node answering or
// announcing the address in an ARP watch, starting from first (the node
// known to answer before the watch; empty: the first node seen). A round
// answered by two MACs is read as ARPRound.Seen orders it, like the lab
// tier's failback check: the node that held the address first.
func switches(rounds []harness.ARPRound, first string) []switchEvent {
	var out []switchEvent
	cur := first
	for _, r := range rounds {
		// In the order that tells who held the address when (ARPRound.Seen):
		// two nodes answering one question is a handover under way (the
		// old owner drains until it hears the new one), not a move there
		// and back, as the process lab counts it.
		prev, ok := nodeMAC[cur]
		if !ok {
			prev = cur // a MAC no node has
		}
		for _, m := range r.Seen(prev) {
			n := h.NodeOf(m)
			if n == "" {
				n = m
			}
			if cur == "" {
				cur = n
				continue
			}
			if n != cur {
				out = append(out, switchEvent{at: r.At(), from: cur, to: n})
				cur = n
			}
		}
	}
	return out
}

// nearest returns the switch closest in time to at, and the signed offset
// of at from it; ok is false when there are none.
func nearest(sw []switchEvent, at time.Time) (s switchEvent, d time.Duration, ok bool) {
	for i, e := range sw {
		dd := at.Sub(e.at)
		if i == 0 || abs(dd) < abs(d) {
			s, d, ok = e, dd, true
		}
	}
	return
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// logFailures logs every failed request with its error and its time
// relative to t0 and to the nearest switch of answering node, and returns
// how many there were.
func logFailures(t *testing.T, what string, rs []harness.HTTPResult, sw []switchEvent, t0 time.Time) int {
	t.Helper()
	n := 0
	for _, r := range rs {
		if r.OK {
			continue
		}
		n++
		rel := "no switch of answering node seen"
		if s, d, ok := nearest(sw, r.Start()); ok {
			rel = fmt.Sprintf("%+.0f ms from the nearest switch (%s -> %s at +%.0f ms)", float64(d.Microseconds())/1000, s.from, s.to, harness.MsSince(t0, s.at))
		}
		t.Logf("%s: failed request started at +%.0f ms (took %.0f ms), %s; %s: %s", what, harness.MsSince(t0, r.Start()), r.Lat, rel, failureKind(r.Err), r.Err)
	}
	return n
}

// A failed request counts as in flight at a handoff when it started within
// handoffWindow of a switch of answering node; maxPerHandoff of them are
// tolerated per switch.
const (
	handoffWindow = 300 * time.Millisecond
	maxPerHandoff = 3
)

// unattributed counts the failed requests that started more than
// handoffWindow from every switch, and the most failures attributed to one
// switch.
func unattributed(rs []harness.HTTPResult, sw []switchEvent) (stray, worst int) {
	per := map[int]int{}
	for _, r := range rs {
		if r.OK {
			continue
		}
		best, bestD := -1, time.Duration(0)
		for i, e := range sw {
			if d := abs(r.Start().Sub(e.at)); best < 0 || d < bestD {
				best, bestD = i, d
			}
		}
		if best < 0 || bestD > handoffWindow {
			stray++
			continue
		}
		per[best]++
		worst = max(worst, per[best])
	}
	return stray, worst
}

// failureKind says in words what a probe error means for the connection.
func failureKind(err string) string {
	switch {
	case strings.Contains(err, "reset"):
		return "connection reset (a node without the connection's state answered)"
	case strings.Contains(err, "dial tcp"):
		return "no TCP connection (the handshake got no answer)"
	case strings.Contains(err, "awaiting headers"):
		return "connected, but no response in time"
	default:
		return "other"
	}
}

// logSwitches logs every switch of answering node relative to t0, and the
// ARP rounds around them in which two nodes answered or a node announced.
func logSwitches(t *testing.T, what string, sw []switchEvent, rounds []harness.ARPRound, t0 time.Time) {
	t.Helper()
	for _, s := range sw {
		t.Logf("%s: answering node %s -> %s at +%.0f ms", what, s.from, s.to, harness.MsSince(t0, s.at))
	}
	for _, r := range rounds {
		if len(r.MACs) > 1 || len(r.Grat) > 0 {
			t.Logf("%s: ARP round at %+.0f ms: answered by %v, announced by %v", what, harness.MsSince(t0, r.At()), nodesOf(r.MACs), nodesOf(r.Grat))
		}
	}
}

func nodesOf(macs []string) []string {
	var out []string
	for _, m := range macs {
		if n := h.NodeOf(m); n != "" {
			out = append(out, n)
		} else {
			out = append(out, m)
		}
	}
	return out
}

// exactlyOne checks, over several rounds, that exactly one MAC, that of
// node, answers ARP for ip.
func exactlyOne(t *testing.T, ip, node string, rounds int) {
	t.Helper()
	for i := 0; i < rounds; i++ {
		r := h.ARPOnce(t, ip)
		if len(r.MACs) != 1 || r.MACs[0] != nodeMAC[node] {
			t.Fatalf("round %d: %s answered by %v, want only %s (%s)", i, ip, r.MACs, node, nodeMAC[node])
		}
	}
}

// cut takes node off the LAN and puts it back when the test ends.
func cut(t *testing.T, node string) {
	t.Helper()
	script(t, "cut", node)
	t.Cleanup(func() { h.TryScript("uncut", node) })
}

// curlUP waits until a request from the client to ip gets "UP nX".
func curlUP(t *testing.T, ip string) string {
	t.Helper()
	var got string
	if err := poll(15*time.Second, func() error {
		out, err := h.InClient("curl", "-sg", "--max-time", "1", url(ip))
		got = strings.TrimSpace(out)
		if f := strings.Fields(got); err != nil || len(f) != 2 || f[0] != "UP" {
			return fmt.Errorf("curl %s: %q, %v", url(ip), got, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func url(ip string) string { return harness.URL(ip, 80) }

// httpProbe starts a probe making one request every 20 ms to ip, each with a
// 100 ms timeout on a fresh connection.
func httpProbe(t *testing.T, ip string) *harness.Probe {
	t.Helper()
	return h.StartProbe(t, "http", "--url", url(ip), "--interval", "20ms", "--timeout", "100ms")
}

// arpWatch starts an ARP watch on ip, one round every 20 ms.
func arpWatch(t *testing.T, ip string) *harness.Probe {
	t.Helper()
	return h.StartProbe(t, "arp", "--ip", ip, "--watch", "--interval", "20ms", "--duration", "0")
}

func msSince(a, b time.Time) float64 { return harness.MsSince(a, b) }
