//go:build integration

package manifests_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/controller"
	"github.com/ironlb/ironlb/speaker"
)

// apiLog records every request a client makes and the status it got.
type apiLog struct {
	rt    http.RoundTripper
	mu    sync.Mutex
	calls []call
}

type call struct {
	method, path, fieldSelector string
	code                        int // 0 when the request failed without a response
}

func (c call) String() string {
	s := c.method + " " + c.path
	if c.fieldSelector != "" {
		s += "?fieldSelector=" + c.fieldSelector
	}
	return fmt.Sprintf("%s -> %d", s, c.code)
}

func (l *apiLog) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(req)
	c := call{method: req.Method, path: req.URL.Path, fieldSelector: req.URL.Query().Get("fieldSelector")}
	if req.URL.Query().Get("watch") == "true" {
		c.method = "WATCH"
	}
	if err == nil {
		c.code = resp.StatusCode
	}
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
	return resp, err
}

// forbidden lists the requests answered 403.
func (l *apiLog) forbidden() []string {
	var out []string
	for _, c := range l.snapshot() {
		if c.code == http.StatusForbidden {
			out = append(out, c.String())
		}
	}
	return out
}

func (l *apiLog) snapshot() []call {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// check fails the test on any Forbidden answer, and unless every wanted
// call (method and path prefix) was answered with a 2xx: a component that
// never reached a code path proves nothing about its permissions. It logs
// the distinct calls, which are the component's whole API footprint.
func (l *apiLog) check(t *testing.T, want ...string) {
	t.Helper()
	calls := l.snapshot()
	seen := map[string]int{}
	for _, c := range calls {
		if c.code == http.StatusForbidden {
			t.Errorf("Forbidden: %s", c)
		}
		seen[c.String()]++
	}
	var lines []string
	for _, k := range slices.Sorted(maps.Keys(seen)) {
		lines = append(lines, fmt.Sprintf("  %3dx %s", seen[k], k))
	}
	t.Logf("%d API calls:\n%s", len(calls), strings.Join(lines, "\n"))
	for _, w := range want {
		method, prefix, _ := strings.Cut(w, " ")
		if !slices.ContainsFunc(calls, func(c call) bool {
			return c.method == method && strings.HasPrefix(c.path, prefix) && c.code/100 == 2
		}) {
			t.Errorf("no successful %s: the code path was not exercised", w)
		}
	}
}

// saClient returns a client authenticated as ServiceAccount sa of
// ironlb-system, through a token from the TokenRequest API, and the log of
// its requests.
func saClient(t *testing.T, sa string) (kubernetes.Interface, *apiLog) {
	t.Helper()
	ctx := context.Background()
	expiry := int64(3600)
	tr, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	cfg := rest.AnonymousClientConfig(env.Config) // the server and its (insecure) TLS, no credentials
	cfg.BearerToken = tr.Status.Token
	cfg.UserAgent = "ironlb-" + sa + "-rbac-test"
	log := &apiLog{}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { log.rt = rt; return log })
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Be sure who we are: a test that ran as admin would prove nothing.
	ssr, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview: %v", err)
	}
	if got, want := ssr.Status.UserInfo.Username, "system:serviceaccount:"+ns+":"+sa; got != want {
		t.Fatalf("authenticated as %q, want %q", got, want)
	}
	return client, log
}

// lbService creates a LoadBalancer Service in a fresh namespace.
func lbService(t *testing.T, name string) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: env.Namespace(t)},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	svc, err := env.Client.CoreV1().Services(svc.Namespace).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// poll waits for cond, and gives up at once when the component got a
// Forbidden: what it waits for will not happen, and the 403 says why.
func poll(t *testing.T, log *apiLog, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if f := log.forbidden(); len(f) > 0 {
			return false, fmt.Errorf("the component was denied:\n  %s", strings.Join(f, "\n  "))
		}
		return cond(ctx)
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// findEvent returns the Event with reason on the named object, or nil.
func findEvent(ctx context.Context, namespace, object, reason string) (*corev1.Event, error) {
	list, err := env.Client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + object + ",reason=" + reason,
	})
	if err != nil || len(list.Items) == 0 {
		return nil, err
	}
	return &list.Items[0], nil
}

// TestControllerRBAC runs the controller as cmd/controller does (leader
// election through the Lease, then the memberlist Secret, then Run) with
// the controller ServiceAccount's token, until a Service has its address,
// and fails on any Forbidden.
func TestControllerRBAC(t *testing.T) {
	install(t)
	ctx := context.Background()
	// No Secret and no Lease yet, so the create paths run, as on a fresh
	// install.
	if err := env.Client.CoreV1().Secrets(ns).Delete(ctx, api.MemberlistSecret, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := env.Client.CoordinationV1().Leases(ns).Delete(ctx, "ironlb-controller", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}

	client, log := saClient(t, "controller")
	c := controller.New(client, controller.Options{Namespace: ns, ConfigName: api.DefaultConfigName, Workers: 2, Instance: "rbac-test"})
	runCtx, cancel := context.WithCancel(klog.NewContext(ctx, klog.Background().WithName("controller")))
	led := make(chan struct{})
	elected := make(chan struct{})
	done := make(chan struct{})
	stop := func() {
		cancel()
		<-done
		select {
		case <-elected:
			<-led
		default:
		}
	}
	defer stop()
	go func() {
		defer close(done)
		leaderelection.RunOrDie(runCtx, leaderelection.LeaderElectionConfig{
			Lock: &resourcelock.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: "ironlb-controller"},
				Client:     client.CoordinationV1(),
				LockConfig: resourcelock.ResourceLockConfig{Identity: "rbac-test"},
			},
			LeaseDuration:   15 * time.Second,
			RenewDeadline:   10 * time.Second,
			RetryPeriod:     500 * time.Millisecond,
			ReleaseOnCancel: true,
			Name:            "ironlb-controller",
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					defer close(led)
					close(elected)
					c.SetLeading(true)
					if created, err := controller.EnsureMemberlistSecret(ctx, client, ns); err != nil || !created {
						t.Errorf("EnsureMemberlistSecret: created %v, %v", created, err)
					}
					if err := c.Run(ctx); err != nil {
						t.Errorf("Run: %v", err)
					}
				},
				OnStoppedLeading: func() {},
			},
		})
	}()
	poll(t, log, "the Lease", 30*time.Second, func(context.Context) (bool, error) {
		select {
		case <-elected:
			return true, nil
		default:
			return false, nil
		}
	})

	svc := lbService(t, "web")
	poll(t, log, "the Service's address", 60*time.Second, func(ctx context.Context) (bool, error) {
		s, err := env.Client.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
		return err == nil && len(s.Status.LoadBalancer.Ingress) > 0, err
	})
	poll(t, log, "the IPAllocated Event", 30*time.Second, func(ctx context.Context) (bool, error) {
		ev, err := findEvent(ctx, svc.Namespace, svc.Name, api.EventIPAllocated)
		return ev != nil, err
	})
	poll(t, log, "the ConfigLoaded Event", 30*time.Second, func(ctx context.Context) (bool, error) {
		ev, err := findEvent(ctx, ns, api.DefaultConfigName, api.EventConfigLoaded)
		return ev != nil, err
	})
	var acquired time.Time
	poll(t, log, "a Lease renewal", 30*time.Second, func(ctx context.Context) (bool, error) {
		l, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, "ironlb-controller", metav1.GetOptions{})
		if err != nil || l.Spec.AcquireTime == nil || l.Spec.RenewTime == nil {
			return false, err
		}
		acquired = l.Spec.AcquireTime.Time
		return l.Spec.RenewTime.After(acquired), nil
	})
	// A second replica, or a restart, finds the Secret.
	if created, err := controller.EnsureMemberlistSecret(ctx, client, ns); err != nil || created {
		t.Errorf("EnsureMemberlistSecret on an existing Secret: created %v, %v", created, err)
	}

	// ReleaseOnCancel: stepping down updates the Lease.
	stop()
	l, err := env.Client.CoordinationV1().Leases(ns).Get(ctx, "ironlb-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := l.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("Lease still held by %q after stepping down", *h)
	}

	log.check(t,
		"GET /api/v1/services",
		"WATCH /api/v1/services",
		"GET /api/v1/namespaces/"+ns+"/configmaps",
		"WATCH /api/v1/namespaces/"+ns+"/configmaps",
		"POST /api/v1/namespaces/"+ns+"/configmaps",
		"PATCH /api/v1/namespaces/"+svc.Namespace+"/services/"+svc.Name+"/status",
		"POST /apis/events.k8s.io/v1/namespaces/"+svc.Namespace+"/events",
		"POST /apis/events.k8s.io/v1/namespaces/"+ns+"/events",
		"GET /api/v1/namespaces/"+ns+"/secrets/"+api.MemberlistSecret,
		"POST /api/v1/namespaces/"+ns+"/secrets",
		"POST /apis/coordination.k8s.io/v1/namespaces/"+ns+"/leases",
		"GET /apis/coordination.k8s.io/v1/namespaces/"+ns+"/leases/ironlb-controller",
		"PUT /apis/coordination.k8s.io/v1/namespaces/"+ns+"/leases/ironlb-controller",
	)
}

// recordingAnnouncer stands in for the layer-2 announcer.
type recordingAnnouncer struct {
	mu    sync.Mutex
	owned map[netip.Addr][]string
}

func (a *recordingAnnouncer) SetOwned(owned map[netip.Addr][]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.owned = maps.Clone(owned)
}

func (a *recordingAnnouncer) owns(ip netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.owned[ip]
	return ok
}

// TestSpeakerRBAC runs the speaker's API paths (memberlist key, Node list,
// the informers, the event recorder) with the speaker ServiceAccount's
// token until it announces a Service's address and has recorded, then
// re-recorded (a patch), its nodeAssigned Event.
func TestSpeakerRBAC(t *testing.T) {
	install(t)
	ctx := context.Background()
	// The controller creates the Secret; TestControllerRBAC may not have run.
	if _, err := controller.EnsureMemberlistSecret(ctx, env.Client, ns); err != nil {
		t.Fatal(err)
	}
	const node = "speaker-rbac-node"
	n, err := env.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) { // -count=2
		n, err = env.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}}
	if _, err := env.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// An address as the controller would have written it.
	ip := netip.MustParseAddr("192.168.56.110")
	svc := lbService(t, "shop")
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String()}}
	if _, err := env.Client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	client, log := saClient(t, "speaker")
	runCtx, cancel := context.WithCancel(klog.NewContext(ctx, klog.Background().WithName("speaker")))
	defer cancel()
	// As cmd/speaker: the key, the Nodes' addresses, then the speaker.
	key, err := speaker.MemberlistKey(runCtx, client, ns)
	if err != nil || len(key) != 32 {
		t.Fatalf("MemberlistKey: %d bytes, %v", len(key), err)
	}
	if _, err := client.CoreV1().Nodes().List(runCtx, metav1.ListOptions{}); err != nil {
		t.Fatalf("listing Nodes: %v", err)
	}
	ann := &recordingAnnouncer{}
	sp := speaker.New(client, ann, speaker.Options{NodeName: node, Namespace: ns, ConfigName: api.DefaultConfigName})
	sp.MembersChanged([]string{node})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := sp.Run(runCtx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	defer func() { cancel(); <-done }()

	poll(t, log, "the speaker to announce "+ip.String(), 60*time.Second, func(context.Context) (bool, error) { return ann.owns(ip), nil })
	poll(t, log, "the nodeAssigned Event", 30*time.Second, func(ctx context.Context) (bool, error) {
		ev, err := findEvent(ctx, svc.Namespace, svc.Name, api.EventNodeAssigned)
		return ev != nil, err
	})
	poll(t, log, "the speaker's "+api.ConditionAnnounced+" condition", 30*time.Second, func(ctx context.Context) (bool, error) {
		cur, err := env.Client.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range cur.Status.Conditions {
			if c.Type == api.ConditionAnnounced && c.Status == metav1.ConditionTrue && c.Message == ip.String()+" by "+node {
				return true, nil
			}
		}
		return false, nil
	})
	// Lose the address (no live member) and win it back, twice: the
	// recorder sees the same Event again and patches it into a series.
	// Twice, because the events library folds only Events about the same
	// version of the Service, and the condition write above made a new
	// one after the first nodeAssigned.
	for range 2 {
		sp.MembersChanged(nil)
		poll(t, log, "the speaker to let go of "+ip.String(), 30*time.Second, func(context.Context) (bool, error) { return !ann.owns(ip), nil })
		sp.MembersChanged([]string{node})
		poll(t, log, "the speaker to announce "+ip.String()+" again", 30*time.Second, func(context.Context) (bool, error) { return ann.owns(ip), nil })
	}
	poll(t, log, "a nodeAssigned Event's count to reach 2", 30*time.Second, func(ctx context.Context) (bool, error) {
		list, err := env.Client.CoreV1().Events(svc.Namespace).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + svc.Name + ",reason=" + api.EventNodeAssigned,
		})
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(list.Items, func(ev corev1.Event) bool { return ev.Series != nil && ev.Series.Count >= 2 }), nil
	})

	log.check(t,
		"GET /api/v1/namespaces/"+ns+"/secrets/"+api.MemberlistSecret,
		"GET /api/v1/nodes",
		"WATCH /api/v1/nodes",
		"GET /api/v1/services",
		"WATCH /api/v1/services",
		"GET /apis/discovery.k8s.io/v1/endpointslices",
		"WATCH /apis/discovery.k8s.io/v1/endpointslices",
		"GET /api/v1/namespaces/"+ns+"/configmaps",
		"WATCH /api/v1/namespaces/"+ns+"/configmaps",
		"POST /apis/events.k8s.io/v1/namespaces/"+svc.Namespace+"/events",
		"PATCH /apis/events.k8s.io/v1/namespaces/"+svc.Namespace+"/events/",
	)
}

// TestLeastPrivilege checks that the rules stop where the code's needs do:
// the speaker only reads (plus Events), and the names in resourceNames are
// the only ones either component can read.
func TestLeastPrivilege(t *testing.T) {
	install(t)
	ctx := context.Background()
	if _, err := controller.EnsureMemberlistSecret(ctx, env.Client, ns); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	svc := lbService(t, "api")
	status := []byte(`{"status":{"loadBalancer":{"ingress":[{"ip":"192.168.56.109"}]}}}`)
	byName := metav1.ListOptions{FieldSelector: "metadata.name=" + api.DefaultConfigName}
	accepted := metav1.ListOptions{FieldSelector: "metadata.name=" + api.AcceptedConfigName(api.DefaultConfigName)}
	ctrl, _ := saClient(t, "controller")
	spk, _ := saClient(t, "speaker")

	for _, tc := range []struct {
		who    kubernetes.Interface
		name   string
		do     func(kubernetes.Interface) error
		denied bool
	}{
		// Speakers patch status (their condition, by server-side apply),
		// but never update a Service.
		{spk, "speaker applies its condition to services/status", func(c kubernetes.Interface) error {
			patch := []byte(`{"apiVersion":"v1","kind":"Service","status":{"conditions":[{"type":"` + api.ConditionAnnounced +
				`","status":"True","reason":"Announced","message":"test","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}`)
			_, err := c.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.ApplyPatchType, patch, metav1.PatchOptions{FieldManager: api.FieldManagerSpeaker, Force: ptr(true)}, "status")
			return err
		}, false},
		{spk, "speaker updates a Service", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().Services(svc.Namespace).Update(ctx, svc, metav1.UpdateOptions{})
			return err
		}, true},
		{spk, "speaker creates the memberlist Secret", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		}, true},
		{spk, "speaker gets another Secret", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().Secrets(ns).Get(ctx, "other", metav1.GetOptions{})
			return err
		}, true},
		{spk, "speaker lists Secrets", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return err
		}, true},
		{spk, "speaker takes the Lease", func(c kubernetes.Interface) error {
			_, err := c.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "ironlb-controller"}}, metav1.CreateOptions{})
			return err
		}, true},
		{spk, "speaker lists every ConfigMap of ironlb-system", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
			return err
		}, true},
		// Speakers read only the config the controller accepted.
		{spk, "speaker lists the user's ConfigMap", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().ConfigMaps(ns).List(ctx, byName)
			return err
		}, true},
		{spk, "speaker lists the accepted copy by name", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().ConfigMaps(ns).List(ctx, accepted)
			return err
		}, false},
		{spk, "speaker writes the accepted copy", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().ConfigMaps(ns).Update(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: api.AcceptedConfigName(api.DefaultConfigName)}}, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}, true},
		{spk, "speaker lists ConfigMaps elsewhere", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().ConfigMaps(svc.Namespace).List(ctx, byName)
			return err
		}, true},
		{ctrl, "controller gets another Secret", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().Secrets(ns).Get(ctx, "other", metav1.GetOptions{})
			return err
		}, true},
		{ctrl, "controller lists Secrets", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return err
		}, true},
		{ctrl, "controller deletes the memberlist Secret", func(c kubernetes.Interface) error {
			return c.CoreV1().Secrets(ns).Delete(ctx, api.MemberlistSecret, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}, true},
		{ctrl, "controller creates a Secret elsewhere", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().Secrets(svc.Namespace).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}, true},
		{ctrl, "controller updates another Lease", func(c kubernetes.Interface) error {
			_, err := c.CoordinationV1().Leases(ns).Update(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.UpdateOptions{})
			return err
		}, true},
		{ctrl, "controller lists every ConfigMap of ironlb-system", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
			return err
		}, true},
		{ctrl, "controller lists the ConfigMap by name", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().ConfigMaps(ns).List(ctx, byName)
			return err
		}, false},
		{ctrl, "controller updates the user's ConfigMap", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().ConfigMaps(ns).Update(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: api.DefaultConfigName}}, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}, true},
		{ctrl, "controller updates a Service's spec", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().Services(svc.Namespace).Update(ctx, svc, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}, true},
		{ctrl, "controller lists Nodes", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		}, true},
		{ctrl, "controller patches services/status", func(c kubernetes.Interface) error {
			_, err := c.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, status, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}, "status")
			return err
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do(tc.who)
			switch {
			case tc.denied && !apierrors.IsForbidden(err):
				t.Errorf("got %v, want Forbidden", err)
			case !tc.denied && err != nil:
				t.Errorf("got %v, want it allowed", err)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
