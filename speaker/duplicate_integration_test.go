//go:build integration

package speaker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/speaker/election"
)

// TestSplitBrainOneAnnouncer: two speakers that each believe the other is
// dead both announce an address. Once each hears the other's announcement,
// exactly one keeps it, the pairwise owner, and both raise a Warning Event
// on the Service through the API server, naming the other node.
func TestSplitBrainOneAnnouncer(t *testing.T) {
	suffix := fmt.Sprint(time.Now().UnixNano() % 100000)
	n1, n2 := "a-"+suffix, "b-"+suffix
	node(t, n1, true, nil)
	node(t, n2, true, nil)
	macOf := map[string]net.HardwareAddr{n1: {2, 0, 0, 0, 0, 1}, n2: {2, 0, 0, 0, 0, 2}}
	owner := func(mac net.HardwareAddr) string {
		for n, m := range macOf {
			if m.String() == mac.String() {
				return n
			}
		}
		return ""
	}
	class := "speaker.ironlb.io/" + suffix
	c := newClusterWith(t, class, "address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.100/32]}\n",
		func(_ string, o *Options) { o.MACOwner = owner }, n1, n2)
	ns := env.Namespace(t)
	lbService(t, ns, "web", class, "198.51.100.100", false)
	ip := netip.MustParseAddr("198.51.100.100")
	c.waitOwners("one owner", func(o map[netip.Addr][]string) bool { return exactlyOne(o, ip.String()) })

	// Split brain: each sees only itself.
	c.speakers[n1].MembersChanged([]string{n1})
	c.speakers[n2].MembersChanged([]string{n2})
	c.waitOwners("both to announce", func(o map[netip.Addr][]string) bool { return len(o[ip]) == 2 })

	// Each hears the other's gratuitous ARP.
	ctx := context.Background()
	t0 := time.Now()
	c.speakers[n1].DuplicateAnnouncer(ctx, ip, macOf[n2])
	c.speakers[n2].DuplicateAnnouncer(ctx, ip, macOf[n1])
	want := election.Owner(ip, []string{n1, n2})
	c.waitOwners("one announcer again", func(o map[netip.Addr][]string) bool { return slices.Equal(o[ip], []string{want}) })
	t.Logf("split brain settled on %s after %v", want, time.Since(t0).Round(time.Millisecond))
	if time.Since(t0) > 2*time.Second {
		t.Errorf("split brain took %v to settle, want within 2 s", time.Since(t0))
	}

	// Both Warnings reach the API server, each naming the other node.
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := env.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=" + api.EventDuplicateAnnouncer})
		if err != nil {
			t.Fatal(err)
		}
		var from []string
		for _, e := range evs.Items {
			if e.Type != "Warning" || e.InvolvedObject.Name != "web" {
				t.Errorf("Event %s %s on %s, want a Warning on web", e.Type, e.Reason, e.InvolvedObject.Name)
			}
			from = append(from, e.ReportingInstance+": "+e.Message)
		}
		if len(from) == 2 {
			t.Logf("Events: %q", from)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DuplicateAnnouncer Events after 10 s: %q, want one from each speaker", from)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Views agree again: still exactly the owner.
	c.members(n1, n2)
	time.Sleep(200 * time.Millisecond)
	if o := c.owners(); !slices.Equal(o[ip], []string{want}) {
		t.Errorf("after the views merged, %s is announced by %v, want %s", ip, o[ip], want)
	}
}
