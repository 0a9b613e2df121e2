//go:build integration

package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
)

// eventCount counts the Events of a namespace, each repeat of a series
// included, as seen through events.k8s.io/v1.
func eventCount(t *testing.T, ns string) int {
	t.Helper()
	list, err := env.Client.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		n++
		if e.Series != nil {
			n += int(e.Series.Count) - 1
		}
	}
	return n
}

// A restart under an unchanged config with every Service served writes
// no Event (and no status): there is nothing new to say. The Events that
// were written are events.k8s.io/v1 Events from the controller, readable
// through core/v1 with their note as message.
func TestRestartWritesNoEvent(t *testing.T) {
	h := newHarness(t, "quiet.ironlb.io/test", "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.88/29]}\n")
	ns := env.Namespace(t)
	for i := range 3 {
		h.svc(ns, fmt.Sprint("s", i))
	}
	for i := range 3 {
		waitEvent(t, ns, fmt.Sprint("s", i), api.EventIPAllocated, "from pool p")
	}
	waitEvent(t, h.ns, "config", api.EventConfigLoaded, "pool \"p\"")
	list, err := env.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		if e.ReportingController != api.ReportingController || e.ReportingInstance != "test" || e.Action == "" {
			t.Errorf("Event %s/%s: reporting %q/%q, action %q", e.Reason, e.InvolvedObject.Name, e.ReportingController, e.ReportingInstance, e.Action)
		}
	}
	// The library writes asynchronously: let the counts settle first.
	var before [2]int
	eventually(t, "the Event counts to settle", func() (bool, string) {
		now := [2]int{eventCount(t, ns), eventCount(t, h.ns)}
		settled := now == before
		before = now
		time.Sleep(500 * time.Millisecond)
		return settled, fmt.Sprint(now)
	})
	h.stop()
	h.start()
	eventually(t, "the restarted controller to be ready", func() (bool, string) { return h.ctrl.Ready(), "" })
	time.Sleep(2 * time.Second)
	if after := [2]int{eventCount(t, ns), eventCount(t, h.ns)}; after != before {
		t.Errorf("Events (Services' namespace, config namespace) went from %v to %v across a restart with nothing changed", before, after)
	}
	if w := h.ctrl.Metrics().StatusWrites(); w != 0 {
		t.Errorf("restart made %v status writes, want 0", w)
	}
}
