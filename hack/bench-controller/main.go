// Command bench-controller measures the controller against a real API
// server: cold-start convergence of N Services, compared with a plain
// client making the same writes (one status patch and one Event per
// Service, 16 workers), then a restart that must change and write nothing.
//
// Run it through hack/bench-controller.sh, which starts the control plane.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/controller"
)

const workers = 16

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the benchmark's control plane")
	n := flag.Int("n", 5000, "Services")
	flag.Parse()
	if err := run(*kubeconfig, *n); err != nil {
		fmt.Fprintln(os.Stderr, "bench-controller:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, n int) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 5000, 10000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	stamp := time.Now().Format("150405")
	sysNS, svcNS, baseNS := "ironlb-"+stamp, "bench-"+stamp, "baseline-"+stamp
	for _, ns := range []string{sysNS, svcNS, baseNS} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	// Addresses that live only in API objects; no packet is ever sent.
	pool := "address-pools:\n- {name: bench, protocol: layer2, addresses: [10.200.0.0/16]}\n"
	if _, err := client.CoreV1().ConfigMaps(sysNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "config"}, Data: map[string]string{"config": pool}}, metav1.CreateOptions{}); err != nil {
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

	// Baseline: the writes the controller must make per Service.
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
	baseline := time.Since(start)

	// Cold start: from Run until every Service shows an address.
	assigned := watchAssigned(ctx, client, svcNS)
	opts := controller.Options{Namespace: sysNS, ConfigName: "config", Workers: workers, Instance: "bench"}
	start = time.Now()
	stop := runController(client, opts)
	if err := assigned.wait(n, 10*time.Minute); err != nil {
		return err
	}
	converge := time.Since(start)
	stop.cancel()

	before, err := addresses(ctx, client, svcNS)
	if err != nil {
		return err
	}
	// Restart: a new process restores everything and must write nothing.
	restarted := runController(client, opts)
	for !restarted.ctrl.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(5 * time.Second) // let every queued reconcile run
	writes := restarted.ctrl.Metrics().StatusWrites()
	restarted.cancel()
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
	fmt.Printf("controller converge n=%d seconds=%.2f\n", n, converge.Seconds())
	fmt.Printf("baseline writes n=%d workers=%d seconds=%.2f (one status patch + one Event per Service)\n", n, workers, baseline.Seconds())
	fmt.Printf("ratio=%.2f (target <= 1.25)\n", converge.Seconds()/baseline.Seconds())
	fmt.Printf("restart changed=%d status_writes=%.0f (target 0 and 0)\n", changed, writes)
	return nil
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

type running struct {
	ctrl   *controller.Controller
	cancel func()
}

func runController(client kubernetes.Interface, opts controller.Options) running {
	ctx, cancel := context.WithCancel(context.Background())
	ctx = klog.NewContext(ctx, klog.Background())
	c := controller.New(client, opts)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	return running{c, func() { cancel(); <-done }}
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
