// Command bench-controller measures the controller as shipped against a
// real API server: it starts the controller binary with the args of the
// Deployment in manifests/ironlb.yaml (so with its default client limits),
// and times the cold-start convergence of N Services against a plain
// client making the same writes (one status patch and one Event per
// Service, 16 workers) on the same server. Then it restarts the binary,
// which must change no address and write nothing.
//
// Run it through hack/bench-controller.sh, which builds the binary and
// starts the control plane.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

const workers = 16

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the benchmark's control plane")
	n := flag.Int("n", 5000, "Services")
	bin := flag.String("controller", "bin/controller", "the controller binary")
	manifest := flag.String("manifest", "manifests/ironlb.yaml", "manifest whose controller Deployment args the binary gets")
	logDir := flag.String("log-dir", os.TempDir(), "where the controller's logs go")
	flag.Parse()
	if err := run(*kubeconfig, *n, *bin, *manifest, *logDir); err != nil {
		fmt.Fprintln(os.Stderr, "bench-controller:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, n int, bin, manifest, logDir string) error {
	args, err := manifestArgs(manifest)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	// The bench's own client, which is also the baseline's: no
	// client-side limit to speak of, as a plain client written for speed.
	cfg.QPS, cfg.Burst = 5000, 10000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	stamp := time.Now().Format("150405")
	sysNS, svcNS, baseNS := flagValue(args, "namespace"), "bench-"+stamp, "baseline-"+stamp
	for _, ns := range []string{sysNS, svcNS, baseNS} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	// Addresses that live only in API objects; no packet is ever sent.
	pool := "address-pools:\n- {name: bench, protocol: layer2, addresses: [10.200.0.0/16]}\n"
	if _, err := client.CoreV1().ConfigMaps(sysNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: flagValue(args, "config-name")}, Data: map[string]string{"config": pool}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	other := "baseline.example.com/lb"
	fmt.Printf("creating %d Services for the controller and %d for the baseline...\n", n, n)
	if err := parallel(n, func(i int) error { return createService(ctx, client, svcNS, i, nil) }); err != nil {
		return err
	}
	if err := parallel(n, func(i int) error { return createService(ctx, client, baseNS, i, &other) }); err != nil {
		return err
	}

	// Baseline: the writes the controller must make per Service. Both runs
	// are timed the same way: until a watch has seen every Service with
	// its address, so the watch's cost and lag weigh on both alike.
	baseCtx, stopBaseWatch := context.WithCancel(ctx)
	defer stopBaseWatch()
	baseSeen := watchAssigned(baseCtx, client, baseNS)
	vip := corev1.LoadBalancerIPModeVIP
	start := time.Now()
	err = parallel(n, func(i int) error {
		ip := netip.AddrFrom4([4]byte{10, 201, byte(i >> 8), byte(i)})
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"loadBalancer": map[string]any{
			"ingress": []corev1.LoadBalancerIngress{{IP: ip.String(), IPMode: &vip}}}}})
		name := fmt.Sprint("svc-", i)
		if _, err := client.CoreV1().Services(baseNS).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
			return err
		}
		now := metav1.Now()
		_, err := client.CoreV1().Events(baseNS).Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", name, time.Now().UnixNano())},
			InvolvedObject: corev1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: baseNS, Name: name},
			Reason:         "IPAllocated", Message: "Assigned IP " + ip.String(), Type: corev1.EventTypeNormal,
			FirstTimestamp: now, LastTimestamp: now, Count: 1,
		}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	if err := baseSeen.wait(n, 10*time.Minute); err != nil {
		return err
	}
	baseline := time.Since(start)
	stopBaseWatch()

	// Cold start: from exec until every Service shows an address; the
	// time includes the process start, the Lease and the cache sync.
	assigned := watchAssigned(ctx, client, svcNS)
	start = time.Now()
	first, err := startController(bin, kubeconfig, args, logDir+"/controller-1.log")
	if err != nil {
		return err
	}
	defer first.stop()
	if err := assigned.wait(n, 10*time.Minute); err != nil {
		return err
	}
	converge := time.Since(start)
	first.stop()

	before, err := addresses(ctx, client, svcNS)
	if err != nil {
		return err
	}
	// Restart: a new process restores everything and must write nothing.
	restarted, err := startController(bin, kubeconfig, args, logDir+"/controller-2.log")
	if err != nil {
		return err
	}
	defer restarted.stop()
	if err := restarted.waitMetric("ironlb_config_loaded", 1, time.Minute); err != nil {
		return err
	}
	time.Sleep(5 * time.Second) // let every queued reconcile run
	writes, err := restarted.metric("ironlb_status_writes_total")
	if err != nil {
		return err
	}
	restarted.stop()
	after, err := addresses(ctx, client, svcNS)
	if err != nil {
		return err
	}
	changed := 0
	for k, v := range before {
		if after[k] != v {
			changed++
		}
	}
	fmt.Printf("controller binary: %s, manifest args %s (HTTP servers moved to free loopback ports)\n", bin, strings.Join(args, " "))
	fmt.Printf("controller converge n=%d seconds=%.2f\n", n, converge.Seconds())
	fmt.Printf("baseline writes n=%d workers=%d seconds=%.2f (one status patch + one Event per Service; both timed until a watch saw every address)\n", n, workers, baseline.Seconds())
	fmt.Printf("ratio=%.2f (target <= 1.1)\n", converge.Seconds()/baseline.Seconds())
	fmt.Printf("restart changed=%d status_writes=%.0f (target 0 and 0)\n", changed, writes)
	return nil
}

// manifestArgs returns the args of the controller container of the
// controller Deployment in the manifest.
func manifestArgs(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no Deployment named controller with a container named controller", path)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var d appsv1.Deployment
		if err := yaml.Unmarshal(doc, &d); err != nil || d.Kind != "Deployment" || d.Name != "controller" {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "controller" {
				return c.Args, nil
			}
		}
	}
}

// flagValue returns the value of --name=value in args.
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// proc is a running controller binary.
type proc struct {
	cmd     *exec.Cmd
	metrics string
	once    sync.Once
}

// startController runs the binary with the manifest's args, plus the
// kubeconfig and free loopback ports for its HTTP servers in place of the
// manifest's (other processes may hold :7472 on a shared machine).
func startController(bin, kubeconfig string, manifestArgs []string, logFile string) (*proc, error) {
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	healthPort, err := freePort()
	if err != nil {
		return nil, err
	}
	var args []string
	for _, a := range manifestArgs {
		if strings.HasPrefix(a, "--metrics-addr=") || strings.HasPrefix(a, "--health-addr=") {
			continue
		}
		args = append(args, a)
	}
	metrics := "127.0.0.1:" + strconv.Itoa(metricsPort)
	args = append(args, "--kubeconfig="+kubeconfig, "--metrics-addr="+metrics, "--health-addr=127.0.0.1:"+strconv.Itoa(healthPort))
	log, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &proc{cmd: cmd, metrics: metrics}, nil
}

// stop sends SIGTERM, as the kubelet does, and waits for the exit; the
// controller hands its Lease back on the way out.
func (p *proc) stop() {
	p.once.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	})
}

// metric reads one unlabelled sample from the controller's /metrics.
func (p *proc) metric(name string) (float64, error) {
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

func (p *proc) waitMetric(name string, want float64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if v, err := p.metric(name); err == nil && v == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not reach %v within %v", name, want, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func createService(ctx context.Context, client kubernetes.Interface, ns string, i int, class *string) error {
	no := false
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("svc-", i), Namespace: ns},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: class,
			// No NodePorts: 2×N Services would exhaust the NodePort range.
			AllocateLoadBalancerNodePorts: &no,
			Ports:                         []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	_, err := client.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{})
	return err
}

// assignedCounter counts Services with an address, from a watch.
type assignedCounter struct {
	count atomic.Int64
}

func watchAssigned(ctx context.Context, client kubernetes.Interface, ns string) *assignedCounter {
	a := &assignedCounter{}
	seen := sync.Map{}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	mark := func(obj any) {
		if s, ok := obj.(*corev1.Service); ok && len(s.Status.LoadBalancer.Ingress) > 0 {
			if _, dup := seen.LoadOrStore(s.Name, true); !dup {
				a.count.Add(1)
			}
		}
	}
	f.Core().V1().Services().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: mark, UpdateFunc: func(_, o any) { mark(o) }})
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	return a
}

func (a *assignedCounter) wait(n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for a.count.Load() < int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d Services assigned after %v", a.count.Load(), n, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

func addresses(ctx context.Context, client kubernetes.Interface, ns string) (map[string]string, error) {
	list, err := client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range list.Items {
		for _, in := range s.Status.LoadBalancer.Ingress {
			out[s.Name] += in.IP + " "
		}
	}
	return out, nil
}

// parallel runs f for 0..n-1 on 16 workers and returns the first error.
func parallel(n int, f func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
