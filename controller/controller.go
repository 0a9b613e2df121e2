package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/api/recorder"
	"github.com/ironlb/ironlb/api/service"
	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/ipam"
)

// Options configure a Controller.
type Options struct {
	// Namespace and ConfigName locate the address-pool ConfigMap.
	Namespace, ConfigName string
	// LBClass, when set, is the only loadBalancerClass handled; when empty,
	// only Services without a class are.
	LBClass string
	// Workers reconcile Services in parallel.
	Workers int
	// Instance names this replica in Events (reportingInstance).
	Instance string
	Metrics  *Metrics
}

// configKey is the queue key for the ConfigMap. It cannot clash with a
// Service key, which always contains a slash.
const configKey = "config"

var everything = labels.Everything()

// errNoConfig makes a Service wait for the first config.
var errNoConfig = errors.New("waiting for the address-pool ConfigMap")

// Controller assigns addresses to Services.
//
// Workers run reconcile concurrently, for different keys; the workqueue
// never hands one key to two workers. Every decision about addresses is
// made by the ledger, which is safe for concurrent use; mu guards the
// config fields below it and is never held across an API call.
type Controller struct {
	opts       Options
	client     kubernetes.Interface
	factory    informers.SharedInformerFactory
	cmFactory  informers.SharedInformerFactory
	accFactory informers.SharedInformerFactory
	services   corelisters.ServiceLister
	configs    corelisters.ConfigMapLister
	accepted   corelisters.ConfigMapLister // the accepted copy (api.AcceptedConfigName)
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string]
	metrics    *Metrics
	recorder   *recorder.Recorder

	leading atomic.Bool
	started atomic.Bool // Run has synced its caches and the config once

	ledger *ipam.Ledger

	mu  sync.Mutex
	cfg *config.Config // last config taken; nil until one is
	// cfgRV is the resourceVersion of the ConfigMap last settled: accepted,
	// or refused as invalid (which no change elsewhere can cure). A config
	// refused because it would take addresses from Services is not
	// settled: it waits in refusedRV and is evaluated again whenever
	// addresses are freed, and taken once nothing blocks it.
	cfgRV      string
	refusedRV  string // resourceVersion of a config refused for misfits
	refusedMsg string // what was said about it, to say it once
	// acceptedText and acceptedRV are the config in force and the
	// resourceVersion it came from, as published in the accepted copy.
	acceptedText, acceptedRV string
}

// New builds a controller; Run starts it.
func New(client kubernetes.Interface, opts Options) *Controller {
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	c := &Controller{
		opts:    opts,
		client:  client,
		metrics: opts.Metrics,
		ledger:  ipam.NewLedger(),
		// Events go out from the library's goroutines, so a worker never
		// waits for one, and repeats fold into a series.
		recorder: recorder.New(client, api.ReportingController, opts.Instance),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ironlb-controller"}),
	}
	c.metrics.setSource(c.ledger.Stats)
	// Services are many and large: drop managedFields from the cache, which
	// the controller never reads.
	c.factory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTransform(func(obj any) (any, error) {
			if m, ok := obj.(metav1.ObjectMetaAccessor); ok {
				m.GetObjectMeta().SetManagedFields(nil)
			}
			return obj, nil
		}))
	svcInf := c.factory.Core().V1().Services()
	c.services = svcInf.Lister()
	svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueService,
		UpdateFunc: func(_, obj any) { c.enqueueService(obj) },
		DeleteFunc: c.enqueueService,
	})
	// Only the one ConfigMap is watched, not every ConfigMap of the cluster.
	c.cmFactory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "metadata.name=" + opts.ConfigName
		}))
	cmInf := c.cmFactory.Core().V1().ConfigMaps()
	c.configs = cmInf.Lister()
	cmInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.queue.Add(configKey) },
		UpdateFunc: func(any, any) { c.queue.Add(configKey) },
		DeleteFunc: func(any) { c.queue.Add(configKey) },
	})
	// The accepted copy is watched so that a copy deleted or edited by
	// hand is written back at once.
	c.accFactory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "metadata.name=" + api.AcceptedConfigName(opts.ConfigName)
		}))
	accInf := c.accFactory.Core().V1().ConfigMaps()
	c.accepted = accInf.Lister()
	accInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.queue.Add(configKey) },
		UpdateFunc: func(any, any) { c.queue.Add(configKey) },
		DeleteFunc: func(any) { c.queue.Add(configKey) },
	})
	c.synced = []cache.InformerSynced{svcInf.Informer().HasSynced, cmInf.Informer().HasSynced, accInf.Informer().HasSynced}
	return c
}

func (c *Controller) enqueueService(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil {
		c.queue.Add(key)
	}
}

// Run waits for the caches, loads the config and restores every existing
// assignment in one pass, then reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	defer c.queue.ShutDown()
	if err := c.recorder.Start(ctx); err != nil {
		return fmt.Errorf("starting the Event recorder: %w", err)
	}
	c.factory.Start(ctx.Done())
	c.cmFactory.Start(ctx.Done())
	c.accFactory.Start(ctx.Done())
	defer c.factory.Shutdown()
	defer c.cmFactory.Shutdown()
	defer c.accFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("caches did not sync: %w", ctx.Err())
	}
	// The config sync restores assignments before any worker can allocate.
	// Publishing the accepted copy may fail; the queue retries it.
	if err := c.syncConfig(ctx); err != nil {
		logger.Error(err, "Publishing the accepted config; retrying")
		c.queue.AddRateLimited(configKey)
	}
	c.started.Store(true)
	logger.Info("Controller started", "workers", c.opts.Workers, "namespace", c.opts.Namespace, "config", c.opts.ConfigName, "lbClass", c.opts.LBClass)
	var wg sync.WaitGroup
	for range c.opts.Workers {
		wg.Go(func() { wait.UntilWithContext(ctx, c.worker, time.Second) })
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

// Ready reports whether the controller's caches have synced and it has
// looked at the config once, restoring the existing assignments when there
// is one. A missing or refused config does not make it unready: it is then
// doing its job (keeping every address, logging and reporting why new
// Services wait), and a Deployment whose pod never became Ready would stall
// every rollout until someone wrote a config.
func (c *Controller) Ready() bool { return c.started.Load() }

// Metrics returns the controller's metrics.
func (c *Controller) Metrics() *Metrics { return c.metrics }

// SetLeading records whether this replica holds the lease.
func (c *Controller) SetLeading(v bool) { c.leading.Store(v) }

// Leading reports whether this replica holds the lease.
func (c *Controller) Leading() bool { return c.leading.Load() }

func (c *Controller) worker(ctx context.Context) {
	for c.process(ctx) {
	}
}

func (c *Controller) process(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	var err error
	if key == configKey {
		err = c.syncConfig(ctx)
	} else {
		err = c.reconcile(ctx, key)
	}
	if err != nil {
		klog.FromContext(ctx).Error(err, "Reconcile failed; retrying", "service", key)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// syncConfig loads the ConfigMap and publishes the config in force as the
// accepted copy (see api.AcceptedConfigName). A config is taken whole or
// not at all: an invalid one, or one that would take an address from a
// Service that holds it, is refused and the last good config stays in
// force, for the controller and, through the accepted copy, for the
// speakers. Its error is only for a failed publication, to retry.
func (c *Controller) syncConfig(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	cm, err := c.configs.ConfigMaps(c.opts.Namespace).Get(c.opts.ConfigName)
	if apierrors.IsNotFound(err) {
		c.ledger.Pause()
		c.mu.Lock()
		c.cfgRV, c.refusedRV, c.refusedMsg = "", "", ""
		c.mu.Unlock()
		c.metrics.configState(false, true)
		// The accepted copy stays: speakers keep announcing as before.
		logger.Info("No address-pool ConfigMap: existing addresses are kept, new Services wait", "configmap", klog.KRef(c.opts.Namespace, c.opts.ConfigName))
		return nil
	}
	if err != nil {
		logger.Error(err, "Reading the ConfigMap from the cache")
		return nil
	}
	c.mu.Lock()
	settled := cm.ResourceVersion == c.cfgRV
	c.mu.Unlock()
	if !settled {
		c.evaluate(ctx, cm)
	}
	return c.publish(ctx)
}

// evaluate decides on a ConfigMap version not settled yet.
func (c *Controller) evaluate(ctx context.Context, cm *corev1.ConfigMap) {
	logger := klog.FromContext(ctx)
	text, ok := cm.Data[api.ConfigKey]
	if !ok {
		c.settleInvalid(cm.ResourceVersion)
		c.reject(ctx, cm, fmt.Sprintf("the ConfigMap has no data key %q; put the address-pool YAML under data.%s", api.ConfigKey, api.ConfigKey))
		return
	}
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		c.settleInvalid(cm.ResourceVersion)
		c.reject(ctx, cm, "invalid config, the last good config stays in force:\n"+err.Error())
		return
	}

	c.mu.Lock()
	wasRefused := c.refusedRV == cm.ResourceVersion
	c.mu.Unlock()
	// The snapshot matters only for the first pools; the ledger ignores it
	// later, so it is not built then. Only this key's worker loads pools.
	var snapshot []ipam.Assignment
	if c.cfgNil() {
		snapshot = c.snapshot()
	}
	loaded, err := c.ledger.Load(cfg.IPAM(), snapshot)
	if err != nil {
		c.settleInvalid(cm.ResourceVersion)
		c.reject(ctx, cm, err.Error())
		return
	}
	if misfits := loaded.Misfits; len(misfits) > 0 {
		lines := make([]string, len(misfits))
		for i, m := range misfits {
			lines[i] = m.String()
		}
		msg := "the config would take addresses from Services that hold them, so it is refused and the last good config stays in force; it is taken as soon as they let go of them:\n" + strings.Join(lines, "\n")
		// Evaluated again on every freed address: say it again only
		// when something else blocks it.
		c.mu.Lock()
		repeat := wasRefused && c.refusedMsg == msg
		c.refusedRV, c.refusedMsg = cm.ResourceVersion, msg
		c.mu.Unlock()
		if repeat {
			logger.V(2).Info("Refused address-pool config still blocked", "configmap", klog.KObj(cm), "blocking", len(misfits))
			return
		}
		c.reject(ctx, cm, msg)
		return
	}
	first, restoreErrs, retry := loaded.First, loaded.RestoreErrors, loaded.Retry
	if first {
		retry = c.ourKeys()
	}
	c.mu.Lock()
	c.cfg = cfg
	c.cfgRV, c.refusedRV, c.refusedMsg = cm.ResourceVersion, "", ""
	c.acceptedText, c.acceptedRV = text, cm.ResourceVersion
	c.mu.Unlock()

	c.metrics.configState(true, false)
	// A restart under the config the last run accepted (the accepted copy
	// says so) changes nothing, and says nothing: what there was to say
	// was said by the run that accepted it.
	again := first && c.publishedAlready(cm.ResourceVersion, text)
	for _, err := range restoreErrs {
		var re *ipam.RestoreError
		if !errors.As(err, &re) {
			continue
		}
		logger.Info("Existing address not restored", "service", re.Key, "reason", err.Error())
		// An address kept outside the pools is reported by the Service's
		// reconcile, through its ironlb.io/Allocated condition, which
		// remembers across restarts that it was said. An address another
		// Service holds is news each time: the Service's status changes
		// once it is reconciled, so the next start does not find it.
		if !errors.Is(err, ipam.ErrInUse) {
			continue
		}
		if svc, gerr := c.serviceByKey(re.Key); gerr == nil {
			c.event(svc, corev1.EventTypeWarning, api.EventAllocationFailed, err.Error()+"; a new address will be allocated")
		}
	}
	note := "Loaded "
	if wasRefused {
		note = "Loaded the config refused before, now that no Service holds an address it would take: "
		logger.Info("Refused address-pool config accepted: nothing blocks it any more", "configmap", klog.KObj(cm), "pools", len(cfg.Pools))
	} else {
		logger.Info("Address-pool config loaded", "pools", len(cfg.Pools), "restored", first)
	}
	if !again {
		c.event(cm, corev1.EventTypeNormal, api.EventConfigLoaded, note+strings.Join(cfg.Summary(), "; "))
	}
	for _, k := range retry {
		c.queue.Add(k)
	}
}

// publishedAlready reports whether the accepted copy already holds text,
// taken from the ConfigMap version rv.
func (c *Controller) publishedAlready(rv, text string) bool {
	cur, err := c.accepted.ConfigMaps(c.opts.Namespace).Get(api.AcceptedConfigName(c.opts.ConfigName))
	return err == nil && cur.Annotations[api.AnnotationAcceptedResourceVersion] == rv &&
		cur.Annotations[api.AnnotationAcceptedSHA256] == api.ConfigHash(text) && cur.Data[api.ConfigKey] == text
}

// settleInvalid records a config version that no change elsewhere can
// make acceptable, so it is not parsed again.
func (c *Controller) settleInvalid(rv string) {
	c.mu.Lock()
	c.cfgRV, c.refusedRV, c.refusedMsg = rv, "", ""
	c.mu.Unlock()
}

// publish makes the accepted copy hold the config in force, writing only
// when it differs.
func (c *Controller) publish(ctx context.Context) error {
	c.mu.Lock()
	text, rv, have := c.acceptedText, c.acceptedRV, c.cfg != nil
	c.mu.Unlock()
	if !have {
		return nil
	}
	name := api.AcceptedConfigName(c.opts.ConfigName)
	hash := api.ConfigHash(text)
	cur, err := c.accepted.ConfigMaps(c.opts.Namespace).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err == nil && cur.Data[api.ConfigKey] == text && cur.Annotations[api.AnnotationAcceptedSHA256] == hash &&
		cur.Annotations[api.AnnotationAcceptedResourceVersion] == rv {
		return nil
	}
	want := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: c.opts.Namespace,
			Labels: map[string]string{api.LabelAcceptedCopy: c.opts.ConfigName},
			Annotations: map[string]string{
				api.AnnotationAcceptedResourceVersion: rv,
				api.AnnotationAcceptedSHA256:          hash,
			},
		},
		Data: map[string]string{api.ConfigKey: text},
	}
	cms := c.client.CoreV1().ConfigMaps(c.opts.Namespace)
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, want, metav1.CreateOptions{FieldManager: api.FieldManagerController})
	} else {
		want.ResourceVersion = cur.ResourceVersion
		_, err = cms.Update(ctx, want, metav1.UpdateOptions{FieldManager: api.FieldManagerController})
	}
	if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
		// The cache is behind our own last write (or someone else's): its
		// watch event enqueues the config again, and publish looks anew.
		klog.FromContext(ctx).V(2).Info("Accepted config changed meanwhile; publishing again once the cache has it", "configmap", klog.KRef(c.opts.Namespace, name))
		return nil
	}
	if err != nil {
		return fmt.Errorf("publishing the accepted config in ConfigMap %s/%s: %w", c.opts.Namespace, name, err)
	}
	klog.FromContext(ctx).V(1).Info("Published the accepted config", "configmap", klog.KRef(c.opts.Namespace, name), "from", rv)
	return nil
}

// snapshot lists every address already in a Service's status, for the
// ledger to restore in one pass before anything is allocated, so a
// restart changes nothing.
func (c *Controller) snapshot() []ipam.Assignment {
	svcs, _ := c.services.List(everything)
	var snap []ipam.Assignment
	for _, svc := range svcs {
		if !service.Ours(svc, c.opts.LBClass) {
			continue
		}
		ips := service.IngressIPs(svc)
		if len(ips) == 0 {
			continue
		}
		req, err := NewRequest(svc)
		if err != nil {
			// A bad annotation must not cost the Service its address.
			req = &Request{Service: ipam.Service{Key: service.Key(svc)}}
		}
		snap = append(snap, ipam.Assignment{Service: req.Service, Addrs: ips})
	}
	return snap
}

// ourKeys lists every Service the controller handles.
func (c *Controller) ourKeys() []string {
	svcs, _ := c.services.List(everything)
	keys := make([]string, 0, len(svcs))
	for _, s := range svcs {
		if service.Ours(s, c.opts.LBClass) {
			keys = append(keys, service.Key(s))
		}
	}
	return keys
}

func (c *Controller) cfgNil() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg == nil
}

func (c *Controller) serviceByKey(key string) (*corev1.Service, error) {
	ns, name, _ := strings.Cut(key, "/")
	return c.services.Services(ns).Get(name)
}

func (c *Controller) reject(ctx context.Context, cm *corev1.ConfigMap, msg string) {
	klog.FromContext(ctx).Error(nil, "Address-pool config rejected", "configmap", klog.KObj(cm), "problems", msg)
	c.metrics.configState(c.Ready(), true)
	c.event(cm, corev1.EventTypeWarning, api.EventConfigRejected, msg)
}

// event records an Event and counts it by reason.
func (c *Controller) event(obj runtime.Object, eventtype, reason, note string) {
	c.metrics.events.WithLabelValues(reason).Inc()
	c.recorder.Event(obj, eventtype, reason, note)
}

// reconcile brings one Service's addresses and status in line with its
// spec. It returns an error only for failed API writes, which are retried
// with backoff; allocation failures wait for addresses or pools to change.
func (c *Controller) reconcile(ctx context.Context, key string) error {
	logger := klog.FromContext(ctx).WithValues("service", key)
	svc, err := c.serviceByKey(key)
	if apierrors.IsNotFound(err) {
		c.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	if !service.Ours(svc, c.opts.LBClass) {
		return c.disown(ctx, svc)
	}
	var res ipam.Result
	req, reqErr := NewRequest(svc)
	if reqErr != nil {
		// Keep what the Service holds; say what is wrong with the request.
		res = c.ledger.Hold(key, reqErr)
	} else if res = c.ledger.Ensure(*req); res.Wait {
		return nil // Run re-enqueues every Service once a config loads.
	}
	if res.Freed {
		c.retryFailed()
	}
	c.metrics.allocations.Add(float64(res.Taken))
	var want *failure
	fresh := res.Report
	switch {
	case res.Err != nil:
		want = failureOf(res.Err, reqErr != nil)
	case len(res.Pinned) > 0:
		// Not a refusal, so the ledger does not track it; the condition
		// alone says whether it was reported.
		want, fresh = pinnedFailure(res.Pinned), true
	}
	plan := planStatus(svc, Ingress(res.Addrs), want, fresh, metav1.Now())
	if plan.event {
		// Before the write: the ledger reports a failure once per run, so
		// an Event put off to a retry of a failed write would be lost.
		logger.Info("Allocation failed", "reason", want.message, "condition", want.reason)
		c.event(svc, corev1.EventTypeWarning, api.EventAllocationFailed, want.message)
	}
	if plan.write() {
		if err := c.writeStatus(ctx, svc, plan); err != nil {
			return err
		}
		if plan.setIngress && len(plan.ingress) > 0 {
			c.event(svc, corev1.EventTypeNormal, api.EventIPAllocated, c.describeAddrs(res.Addrs))
			logger.V(2).Info("Addresses assigned", "addresses", res.Addrs)
		}
	}
	if res.Err != nil {
		c.metrics.failures.Inc()
	}
	return nil
}

// forget releases a deleted Service's addresses.
func (c *Controller) forget(key string) {
	if c.ledger.Release(key) {
		c.retryFailed()
	}
}

// disown releases a Service that stopped being ours (type or class
// changed) and clears the status we wrote: the addresses it held, and our
// condition, which a previous run may have written. The ingress of a
// Service we do not hold is left alone: it may belong to another load
// balancer.
func (c *Controller) disown(ctx context.Context, svc *corev1.Service) error {
	key := service.Key(svc)
	held := c.ledger.Holds(key)
	plan := statusPlan{
		setIngress: held && len(svc.Status.LoadBalancer.Ingress) > 0,
		dropCond:   allocatedCondition(svc) != nil,
	}
	if !held && !plan.dropCond {
		c.ledger.Release(key) // stop retrying it, if it was waiting
		return nil
	}
	if plan.write() {
		if err := c.writeStatus(ctx, svc, plan); err != nil {
			return err
		}
	}
	c.forget(key)
	klog.FromContext(ctx).V(2).Info("Service is no longer ours; addresses released", "service", key)
	return nil
}

// retryFailed re-enqueues the Services waiting for an address, and a
// config refused because Services held addresses it would take.
func (c *Controller) retryFailed() {
	keys := c.ledger.Waiting()
	c.mu.Lock()
	if c.refusedRV != "" {
		keys = append(keys, configKey)
	}
	c.mu.Unlock()
	for _, k := range keys {
		c.queue.Add(k)
	}
}

// writeStatus sends plan's changes in one patch of the status
// subresource (see statusPlan.statusPatch).
func (c *Controller) writeStatus(ctx context.Context, svc *corev1.Service, plan statusPlan) error {
	pt, patch, err := plan.statusPatch()
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, pt, patch, metav1.PatchOptions{FieldManager: api.FieldManagerController}, "status")
	c.metrics.statusWrites.Inc()
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing the status of Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}

func (c *Controller) describeAddrs(addrs []netip.Addr) string {
	parts := make([]string, len(addrs))
	for i, ip := range addrs {
		if pool, ok := c.ledger.PoolOf(ip); ok {
			parts[i] = fmt.Sprintf("%s from pool %s", ip, pool)
		} else {
			parts[i] = ip.String()
		}
	}
	return "Assigned IP " + strings.Join(parts, ", ")
}
