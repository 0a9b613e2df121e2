package election

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func ready(names ...string) []Node {
	var out []Node
	for _, n := range names {
		out = append(out, Node{Name: n, Ready: true, Labels: map[string]string{"name": n}})
	}
	return out
}

func TestCandidates(t *testing.T) {
	nodes := map[string]Node{
		"a": {Name: "a", Ready: true, Labels: map[string]string{"zone": "1"}},
		"b": {Name: "b", Ready: true, Labels: map[string]string{"zone": "2"}},
		"c": {Name: "c", Ready: false},
		"d": {Name: "d", Ready: true, NetworkUnavailable: true},
		"e": {Name: "e", Ready: true, Excluded: true},
		"f": {Name: "f", Ready: true, Labels: map[string]string{"zone": "1"}},
	}
	all := []string{"f", "a", "b", "c", "d", "e", "ghost"}
	ip := netip.MustParseAddr("198.51.100.100")
	zone1 := func(l map[string]string) bool { return l["zone"] == "1" }
	tests := []struct {
		name string
		addr Address
		live []string
		want []string
	}{
		{"every healthy live node", Address{IP: ip}, all, []string{"a", "b", "f"}},
		{"only live members", Address{IP: ip}, []string{"b", "c"}, []string{"b"}},
		{"pool node selector", Address{IP: ip, NodeAllowed: zone1}, all, []string{"a", "f"}},
		{"local needs an endpoint", Address{IP: ip, Services: []Service{{Key: "ns/s", Local: true, EndpointNodes: []string{"b", "c", "f"}}}}, all, []string{"b", "f"}},
		{"cluster ignores endpoints", Address{IP: ip, Services: []Service{{Key: "ns/s", EndpointNodes: []string{"b"}}}}, all, []string{"a", "b", "f"}},
		{"shared: every local Service's endpoints", Address{IP: ip, Services: []Service{
			{Key: "ns/s", Local: true, EndpointNodes: []string{"a", "b", "f"}},
			{Key: "ns/t", Local: true, EndpointNodes: []string{"f", "b"}},
		}}, all, []string{"b", "f"}},
		{"local without endpoints: nobody", Address{IP: ip, Services: []Service{{Key: "ns/s", Local: true}}}, all, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Candidates(tt.addr, nodes, tt.live)); diff != "" {
				t.Errorf("Candidates (-want +got):\n%s", diff)
			}
		})
	}
}

func addrs(n int) []Address {
	out := make([]Address, n)
	for i := range out {
		// Data only, never packets: 198.18.0.0/15 has room for every i.
		out[i] = Address{IP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})}
		if i%3 == 0 {
			out[i].IP = netip.MustParseAddr(fmt.Sprintf("2001:db8:100::%x", i))
		}
	}
	return out
}

// Every speaker must reach the same answer whatever order it learned
// about nodes and members in.
func TestElectIgnoresOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	nodes := ready("n1", "n2", "n3", "n4", "n5")
	live := []string{"n1", "n2", "n3", "n4", "n5"}
	as := addrs(200)
	want := Elect(as, nodes, live)
	for range 50 {
		n, l := slices.Clone(nodes), slices.Clone(live)
		r.Shuffle(len(n), func(i, j int) { n[i], n[j] = n[j], n[i] })
		r.Shuffle(len(l), func(i, j int) { l[i], l[j] = l[j], l[i] })
		// maps.Equal first: cmp.Diff sorts map keys by reflection, which
		// under the race detector cost most of this test's time.
		if got := Elect(as, n, l); !maps.Equal(want, got) {
			t.Fatalf("owners depend on input order (-want +got):\n%s", cmp.Diff(want, got))
		}
	}
}

// When a node leaves, only the addresses it owned move; when it comes
// back, only addresses it now wins move, and all of them to it.
func TestMinimalDisruption(t *testing.T) {
	nodes := ready("n1", "n2", "n3")
	as := addrs(300)
	full := Elect(as, nodes, []string{"n1", "n2", "n3"})
	for _, gone := range []string{"n1", "n2", "n3"} {
		var live []string
		for _, n := range []string{"n1", "n2", "n3"} {
			if n != gone {
				live = append(live, n)
			}
		}
		less := Elect(as, nodes, live)
		for ip, owner := range full {
			if owner != gone && less[ip] != owner {
				t.Errorf("%s moved from %s to %s when %s left", ip, owner, less[ip], gone)
			}
			if owner == gone && less[ip] == gone {
				t.Errorf("%s still owned by departed %s", ip, gone)
			}
		}
		for ip, owner := range less {
			if full[ip] != owner && full[ip] != gone {
				t.Errorf("%s moved to %s on %s's return, not to %s", ip, full[ip], gone, gone)
			}
		}
	}
}

func TestBalance(t *testing.T) {
	nodes := ready("n1", "n2", "n3")
	count := map[string]int{}
	for _, o := range Elect(addrs(3000), nodes, []string{"n1", "n2", "n3"}) {
		count[o]++
	}
	for n, c := range count {
		// 1,000 expected each; a fair hash stays well within ±15%.
		if c < 850 || c > 1150 {
			t.Errorf("%s owns %d of 3000 addresses: %v", n, c, count)
		}
	}
}

func TestOwnerEmpty(t *testing.T) {
	if o := Owner(netip.MustParseAddr("198.51.100.1"), nil); o != "" {
		t.Errorf("Owner with no candidates = %q", o)
	}
}

func BenchmarkElect1000(b *testing.B) {
	nodes := ready("n1", "n2", "n3")
	as := addrs(1000)
	live := []string{"n1", "n2", "n3"}
	for b.Loop() {
		Elect(as, nodes, live)
	}
}
