package cli

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/config"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func assigned(node string, at time.Time) corev1.Event {
	return corev1.Event{
		Reason:        api.EventNodeAssigned,
		Message:       `announcing from node "` + node + `" with protocol "layer2"`,
		Source:        corev1.EventSource{Component: "ironlb-speaker", Host: node},
		LastTimestamp: metav1.NewTime(at),
	}
}

func lbService(name string, ips ...string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return s
}

func TestLastMove(t *testing.T) {
	other := assigned("n9", t0.Add(5*time.Minute))
	other.Source.Component = "someone-else"
	tests := []struct {
		name   string
		events []corev1.Event
		want   *Move
	}{
		{"none", nil, nil},
		{"first announcement only", []corev1.Event{assigned("n1", t0)}, nil},
		{"one move", []corev1.Event{assigned("n1", t0), assigned("n2", t0.Add(time.Minute))}, &Move{"n1", "n2", t0.Add(time.Minute)}},
		// n1 announced, lost it to n2, and got it back: aggregation keeps
		// one Event per node, with the newest time.
		{"moved back", []corev1.Event{assigned("n2", t0.Add(time.Minute)), assigned("n1", t0.Add(2*time.Minute))}, &Move{"n2", "n1", t0.Add(2 * time.Minute)}},
		{"ignores other writers", []corev1.Event{assigned("n1", t0), other}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, lastMove(tt.events)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestAddressStatus(t *testing.T) {
	cfg, err := config.Parse([]byte("address-pools:\n- {name: lab, protocol: layer2, addresses: [198.51.100.100-198.51.100.110, '2001:db8:100::/120']}\n"))
	if err != nil {
		t.Fatal(err)
	}
	alloc := allocatorFor(poolsState{Config: cfg})

	withCond := lbService("a", "198.51.100.100", "2001:db8:100::1")
	withCond.Status.Conditions = []metav1.Condition{{
		Type: api.ConditionAnnounced, Status: metav1.ConditionTrue, Reason: api.ReasonAnnounced,
		Message: api.FormatAnnouncements([]api.Announcement{
			{IP: netip.MustParseAddr("198.51.100.100"), Node: "n1", Interface: "eth0", MAC: "02:00:00:00:00:01"},
		}),
	}}
	notAnnounced := lbService("b", "198.51.100.101")
	notAnnounced.Status.Conditions = []metav1.Condition{{Type: api.ConditionAnnounced, Status: metav1.ConditionFalse, Reason: api.ReasonNoEligibleNode}}
	outside := lbService("c", "203.0.113.7")

	tests := []struct {
		name   string
		svc    *corev1.Service
		events []corev1.Event
		want   []AddressStatus
	}{
		{
			name: "condition, and an address it does not cover yet",
			svc:  withCond,
			want: []AddressStatus{
				{Namespace: "web", Service: "a", Address: "198.51.100.100", Pool: "lab", Node: "n1", Interface: "eth0", MAC: "02:00:00:00:00:01", Announced: "True", Source: SourceCondition},
				{Namespace: "web", Service: "a", Address: "2001:db8:100::1", Pool: "lab", Announced: "Unknown", Reason: "NotInCondition", Source: SourceCondition},
			},
		},
		{
			name:   "condition False wins over Events",
			svc:    notAnnounced,
			events: []corev1.Event{assigned("n1", t0)},
			want:   []AddressStatus{{Namespace: "web", Service: "b", Address: "198.51.100.101", Pool: "lab", Announced: "False", Reason: api.ReasonNoEligibleNode, Source: SourceCondition}},
		},
		{
			name:   "Events without a condition",
			svc:    outside,
			events: []corev1.Event{assigned("n1", t0), assigned("n3", t0.Add(time.Second))},
			want: []AddressStatus{{Namespace: "web", Service: "c", Address: "203.0.113.7", Pool: "<outside every pool>", Node: "n3", Announced: "True", Source: SourceEvent,
				LastMove: &Move{"n1", "n3", t0.Add(time.Second)}}},
		},
		{
			name: "pending",
			svc:  lbService("d"),
			want: []AddressStatus{{Namespace: "web", Service: "d", Announced: "Unknown", Source: SourceNone}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, addressStatus(tt.svc, tt.events, alloc)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestPoolsReport(t *testing.T) {
	cfg, err := config.Parse([]byte(`address-pools:
- {name: small, protocol: layer2, addresses: [198.51.100.100-198.51.100.109], namespaces: [web]}
- {name: big, protocol: layer2, auto-assign: false, addresses: [198.51.100.128/26, '2001:db8:100::/64']}
`))
	if err != nil {
		t.Fatal(err)
	}
	var svcs []corev1.Service
	for i := range 9 {
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)})
		svcs = append(svcs, *lbService(string(rune('a'+i)), ip.String()))
	}
	v6 := lbService("v6", "2001:db8:100::5")
	stray := lbService("stray", "192.0.2.1")
	svcs = append(svcs, *v6, *stray)
	rep, err := poolsReport(poolsState{Config: cfg}, svcs2assignments(svcs))
	if err != nil {
		t.Fatal(err)
	}
	want := []PoolUsage{
		{Pool: "small", Family: "IPv4", Size: "10", Used: 9, Free: "1", Percent: 90, Full: true, AutoAssign: true, Namespaces: []string{"web"},
			Services: []string{"web/a", "web/b", "web/c", "web/d", "web/e", "web/f", "web/g", "web/h", "web/i"}},
		{Pool: "big", Family: "IPv4", Size: "64", Used: 0, Free: "64"},
		{Pool: "big", Family: "IPv6", Size: "18446744073709551616", Used: 1, Free: "18446744073709551615", Percent: 100.0 / 18446744073709551616, Services: []string{"web/v6"}},
	}
	if diff := cmp.Diff(want, rep.Pools); diff != "" {
		t.Errorf("pools (-want +got):\n%s", diff)
	}
	if len(rep.Unplaced) != 1 || !strings.Contains(rep.Unplaced[0], "web/stray 192.0.2.1") {
		t.Errorf("unplaced = %q, want web/stray's address", rep.Unplaced)
	}
}

func TestVerdicts(t *testing.T) {
	keep := lbService("keep", "198.51.100.100")
	lose := lbService("lose", "198.51.100.200")
	wrongNS := lbService("other", "198.51.100.101")
	wrongNS.Namespace = "shop"
	renamed := lbService("renamed")
	renamed.Annotations = map[string]string{"metallb.io/address-pool": "lab"}
	text := []byte("address-pools:\n- {name: lab, protocol: layer2, addresses: [198.51.100.100-198.51.100.110], namespaces: [web]}\n")
	got, lost, err := verdicts(text, []corev1.Service{*keep, *lose, *wrongNS, *renamed})
	if err != nil {
		t.Fatal(err)
	}
	if lost != 2 {
		t.Errorf("lost = %d, want 2", lost)
	}
	want := map[string]bool{"web/keep": true, "web/lose": false, "shop/other": false}
	for _, v := range got {
		k := v.Namespace + "/" + v.Service
		if v.Address == "" {
			if k != "web/renamed" || !strings.Contains(v.Note, "ironlb.io/address-pool") {
				t.Errorf("pending verdict %+v, want web/renamed with a note on its annotation", v)
			}
			continue
		}
		if v.Keeps != want[k] || (!v.Keeps && v.Reason == "") {
			t.Errorf("%s: %+v, want keeps=%v with a reason when not", k, v, want[k])
		}
	}
}
