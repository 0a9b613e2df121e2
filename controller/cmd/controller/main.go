// Command controller assigns EXTERNAL-IPs to LoadBalancer Services from
// the pools of the ironlb ConfigMap.
//
// With --check-config FILE it only validates a config file and exits, so a
// user can check a ConfigMap before applying it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/api/kubeclient"
	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/controller"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	checkConfig := fs.String("check-config", "", "validate FILE (a ConfigMap manifest or bare config text, - for stdin), print one line per pool, and exit 0 if valid or 1 with every problem")
	kubeconfig := fs.String("kubeconfig", "", "path to a kubeconfig; empty means as kubectl: $KUBECONFIG, else ~/.kube/config, else the in-cluster config")
	namespace := fs.String("namespace", api.DefaultNamespace, "namespace of the address-pool ConfigMap, the memberlist Secret and the leader-election Lease")
	configName := fs.String("config-name", api.DefaultConfigName, "name of the address-pool ConfigMap")
	lbClass := fs.String("lb-class", "", "handle only Services with this spec.loadBalancerClass; when empty, only Services without a class")
	workers := fs.Int("workers", 16, "Services reconciled in parallel")
	// The API server protects itself with API Priority and Fairness, which
	// queues or answers 429 with Retry-After (client-go waits and retries);
	// the --workers bound how many writes are in flight. The client-side
	// limit is only a safety net against a runaway loop, set far above
	// what the workers send, so that it never caps convergence: at 500
	// QPS, 5,000 Services (a patch and an Event each) took 1.22-1.28x a
	// plain client's time on the same server.
	qps := fs.Float64("kube-api-qps", 5000, "client-side limit of API requests per second, a safety net: the API server's Priority and Fairness is what paces the controller")
	burst := fs.Int("kube-api-burst", 10000, "client-side API request burst (safety net, as --kube-api-qps)")
	metricsAddr := fs.String("metrics-addr", ":7472", "address for /metrics; empty disables")
	healthAddr := fs.String("health-addr", ":7473", "address for /healthz and /readyz; empty disables")
	leaderElect := fs.Bool("leader-elect", true, "elect a leader through a Lease so that only one replica allocates")
	leaseName := fs.String("lease-name", "ironlb-controller", "name of the leader-election Lease")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.Var(klogFlag{klogFlags, "v"}, "v", "log verbosity")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *checkConfig != "" {
		return config.Check(*checkConfig, os.Stdin, stdout, stderr)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	logger := klog.Background().WithName("controller")
	ctx = klog.NewContext(ctx, logger)

	cfg, err := kubeclient.Config(*kubeconfig, "ironlb-controller")
	if err != nil {
		logger.Error(err, "Cannot build the API client config")
		return 1
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	// Protobuf for every built-in type the controller reads and writes:
	// decoding thousands of Services from the watch costs several times
	// less CPU than JSON, on the API server's side as well (patch bodies
	// keep their own patch content types).
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		logger.Error(err, "Cannot build the API client")
		return 1
	}
	identity, _ := os.Hostname()
	identity += "_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	c := controller.New(client, controller.Options{
		Namespace: *namespace, ConfigName: *configName, LBClass: *lbClass,
		Workers: *workers, Instance: identity,
	})
	serve(ctx, *metricsAddr, "/metrics", promhttp.HandlerFor(c.Metrics().Registry, promhttp.HandlerOpts{}))
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		// A standby replica is ready: it is healthy and waiting its turn.
		if *leaderElect && !c.Leading() {
			fmt.Fprintln(w, "ok (standby)")
			return
		}
		if !c.Ready() {
			http.Error(w, "waiting for the caches to sync", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	serve(ctx, *healthAddr, "/", mux)

	lead := func(ctx context.Context) {
		if created, err := controller.EnsureMemberlistSecret(ctx, client, *namespace); err != nil {
			logger.Error(err, "Cannot ensure the memberlist Secret; speakers cannot encrypt membership until it exists")
		} else if created {
			logger.Info("Created the memberlist Secret", "secret", klog.KRef(*namespace, api.MemberlistSecret))
		}
		if err := c.Run(ctx); err != nil {
			logger.Error(err, "Controller stopped")
		}
	}
	if !*leaderElect {
		c.SetLeading(true)
		lead(ctx)
		return 0
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: *namespace, Name: *leaseName},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		ReleaseOnCancel: true,
		Name:            *leaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				logger.Info("Leading", "identity", identity)
				c.SetLeading(true)
				lead(ctx)
			},
			OnStoppedLeading: func() {
				// The allocator's view is only valid while leading; a fresh
				// process restores it from the API when it leads again.
				if ctx.Err() == nil {
					logger.Info("Lost the lease; exiting so a restart starts clean")
					os.Exit(1)
				}
			},
		},
	})
	return 0
}

// serve runs an HTTP server on addr until ctx ends; an empty addr disables it.
func serve(ctx context.Context, addr, pattern string, h http.Handler) {
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.Handle(pattern, h)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			klog.FromContext(ctx).Error(err, "HTTP server failed", "addr", addr)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
}

// klogFlag exposes one klog flag in our flag set.
type klogFlag struct {
	fs   *flag.FlagSet
	name string
}

func (f klogFlag) String() string {
	if f.fs == nil {
		return ""
	}
	return f.fs.Lookup(f.name).Value.String()
}
func (f klogFlag) Set(v string) error { return f.fs.Set(f.name, v) }
