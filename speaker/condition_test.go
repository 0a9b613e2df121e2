package speaker

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
)

func TestAnnounceCondition(t *testing.T) {
	v4, v6 := netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("2001:db8:100::10")
	svc := lbSvc("web", v4.String())
	svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: v6.String()})
	local := func(ip netip.Addr) ([]string, []string) { return []string{"eth0"}, []string{"02:00:00:00:00:01"} }
	none := func(netip.Addr) string { return "" }
	members := []string{"n2", "n1", "n3"}
	for _, tc := range []struct {
		name     string
		self     string
		owners   map[netip.Addr]string
		foreign  func(netip.Addr) string
		conflict func(netip.Addr) string
		writes   bool
		status   metav1.ConditionStatus
		reason   string
		message  string
	}{
		{"owner of the first address writes, naming both owners", "n1", map[netip.Addr]string{v4: "n1", v6: "n2"}, none, none, true,
			metav1.ConditionTrue, api.ReasonAnnounced, "198.51.100.10 by n1 on eth0 (02:00:00:00:00:01); 2001:db8:100::10 by n2"},
		{"the owner of the second address does not write", "n2", map[netip.Addr]string{v4: "n1", v6: "n2"}, none, none, false, "", "", ""},
		{"nobody may announce the first address: the first live speaker writes", "n1", map[netip.Addr]string{v6: "n2"}, none, none, true,
			metav1.ConditionFalse, api.ReasonNoEligibleNode, "no live speaker may announce 198.51.100.10 (3 speakers alive)"},
		{"... and nobody else", "n3", map[netip.Addr]string{v6: "n2"}, none, none, false, "", "", ""},
		{"a foreign host claims an owned address", "n1", map[netip.Addr]string{v4: "n1", v6: "n1"},
			func(ip netip.Addr) string {
				if ip == v6 {
					return "02:aa:00:00:00:01"
				}
				return ""
			}, none, true, metav1.ConditionFalse, api.ReasonDuplicateAnnouncer, "2001:db8:100::10 is announced by node n1, and also claimed by MAC 02:aa:00:00:00:01"},
		{"the first address answered our probe: a conflict, read back by a restarted speaker", "n1", map[netip.Addr]string{v4: "n1", v6: "n2"}, none,
			func(ip netip.Addr) string {
				if ip == v4 {
					return "02:bb:00:00:00:01"
				}
				return ""
			}, true, metav1.ConditionFalse, api.ReasonAddressConflict, "address 198.51.100.10 is in use on the LAN by MAC 02:bb:00:00:00:01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, writes := announceCondition(tc.self, svc, tc.owners, members, local, tc.foreign, tc.conflict)
			if writes != tc.writes {
				t.Fatalf("writes = %v, want %v", writes, tc.writes)
			}
			if !writes {
				return
			}
			if c == nil || c.status != tc.status || c.reason != tc.reason || !strings.HasPrefix(c.message, tc.message) {
				t.Errorf("condition %+v, want %s %s %q…", c, tc.status, tc.reason, tc.message)
			}
			if c.reason == api.ReasonAddressConflict {
				cs := svc.DeepCopy()
				cs.Status.Conditions = []metav1.Condition{{Type: api.ConditionAnnounced, Status: c.status, Reason: c.reason, Message: c.message}}
				if !heldForConflict(cs, v4) {
					t.Error("a restarted speaker would not read the conflict back from this condition")
				}
			}
		})
	}
	// A Service without an address has no condition from anyone.
	if c, writes := announceCondition("n1", lbSvc("pending", ""), nil, members, local, none, none); writes || c != nil {
		t.Errorf("Service without an address: %+v, %v", c, writes)
	}
}
