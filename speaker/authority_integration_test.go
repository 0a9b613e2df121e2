//go:build integration

package speaker

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/controller"
)

// TestRefusedConfigIsNotAnnounced: the controller alone judges the config.
// A config that would orphan an address and also moves a pool to other
// nodes is refused; the speakers keep announcing from the same node, also
// after a restart. Once the Service holding the address is deleted the
// refused config is taken with no other edit, and the announcement moves.
func TestRefusedConfigIsNotAnnounced(t *testing.T) {
	suffix := fmt.Sprint(time.Now().UnixNano() % 100000)
	na, nb := "auth-a-"+suffix, "auth-b-"+suffix
	node(t, na, true, map[string]string{"rack": "a"})
	node(t, nb, true, map[string]string{"rack": "b"})
	class := "authority.ironlb.io/" + suffix
	cfgNS := env.Namespace(t)
	ns := env.Namespace(t)
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), klog.Background().WithName(t.Name())))
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	const good = "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.140-198.51.100.143], node-selectors: [{match-labels: {rack: a}}]}\n"
	// Drops .140 and moves the pool to rack b.
	const moved = "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.141-198.51.100.143], node-selectors: [{match-labels: {rack: b}}]}\n"
	cms := env.Client.CoreV1().ConfigMaps(cfgNS)
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "config"}, Data: map[string]string{"config": good}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ctrl := controller.New(env.Client, controller.Options{Namespace: cfgNS, ConfigName: "config", LBClass: class, Workers: 2, Instance: "test"})
	wg.Go(func() {
		if err := ctrl.Run(ctx); err != nil {
			t.Errorf("controller: %v", err)
		}
	})

	anns := map[string]*recorder{na: {}, nb: {}}
	startSpeaker := func(n string, ctx context.Context) {
		s := New(env.Client, anns[n], Options{NodeName: n, Namespace: cfgNS, ConfigName: "config", LBClass: class})
		s.MembersChanged([]string{na, nb})
		wg.Go(func() { s.Run(ctx) })
	}
	startSpeaker(na, ctx)
	bCtx, stopB := context.WithCancel(ctx)
	startSpeaker(nb, bCtx)
	c := &cluster{t: t, anns: anns}

	svc := func(name string) {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class,
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}},
		}
		if _, err := env.Client.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	svc("old") // gets .140
	c.waitOwners("old's address announced from rack a", func(o map[netip.Addr][]string) bool {
		return slices.Equal(o[netip.MustParseAddr("198.51.100.140")], []string{na})
	})
	svc("web") // gets .141
	web := netip.MustParseAddr("198.51.100.141")
	c.waitOwners("web's address announced from rack a", func(o map[netip.Addr][]string) bool {
		return slices.Equal(o[web], []string{na})
	})

	cm, err := cms.Get(ctx, "config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["config"] = moved
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitConfigEvent(t, cfgNS, api.EventConfigRejected, ns+"/old holds 198.51.100.140")
	// The speakers saw the ConfigMap change and must not have applied it.
	time.Sleep(time.Second)
	if o := c.owners(); !slices.Equal(o[web], []string{na}) {
		t.Fatalf("after a refused config, %s is announced by %v, want %s", web, o[web], na)
	}
	acc, err := cms.Get(ctx, api.AcceptedConfigName("config"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if acc.Data["config"] != good {
		t.Errorf("accepted copy holds %q, want the last good config", acc.Data["config"])
	}

	// A restarted speaker finds the accepted config, not the refused one.
	stopB()
	anns[nb].SetOwned(nil)
	startSpeaker(nb, ctx)
	time.Sleep(time.Second)
	if o := c.owners(); !slices.Equal(o[web], []string{na}) {
		t.Fatalf("after a speaker restart under a refused config, %s is announced by %v, want %s", web, o[web], na)
	}

	// Nothing blocks the config once old is gone: it is taken, and the
	// pool's addresses move to rack b.
	if err := env.Client.CoreV1().Services(ns).Delete(ctx, "old", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitConfigEvent(t, cfgNS, api.EventConfigLoaded, "refused before")
	c.waitOwners("web's address announced from rack b", func(o map[netip.Addr][]string) bool {
		return slices.Equal(o[web], []string{nb})
	})
	acc, err = cms.Get(ctx, api.AcceptedConfigName("config"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if acc.Data["config"] != moved || acc.Annotations[api.AnnotationAcceptedResourceVersion] == "" {
		t.Errorf("accepted copy holds %q (from %q), want the new config", acc.Data["config"], acc.Annotations[api.AnnotationAcceptedResourceVersion])
	}
}

// waitConfigEvent waits for an Event with reason on the ConfigMap config
// whose message contains want.
func waitConfigEvent(t *testing.T, ns, reason, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var seen []string
	for time.Now().Before(deadline) {
		list, err := env.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=config,reason=" + reason})
		if err != nil {
			t.Fatal(err)
		}
		seen = seen[:0]
		for _, e := range list.Items {
			if strings.Contains(e.Message, want) {
				return
			}
			seen = append(seen, e.Message)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no %s Event on %s/config mentioning %q; saw %q", reason, ns, want, seen)
}
