package election

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Hash must keep hashing exactly node + "#" + ip.String(): speakers of
// different versions elect together during a rolling upgrade.
func TestHashBytes(t *testing.T) {
	want := func(node string, ip netip.Addr) uint64 {
		sum := sha256.Sum256([]byte(node + "#" + ip.String()))
		return binary.BigEndian.Uint64(sum[:8])
	}
	ips := []netip.Addr{
		netip.MustParseAddr("198.51.100.100"),
		netip.MustParseAddr("2001:db8:100::1"),
		netip.MustParseAddr("::ffff:198.51.100.1"),
		netip.MustParseAddr("fe80::1%eth0"),
		{}, // invalid: String() is "invalid IP"
	}
	nodes := []string{"", "n1", "worker-17.example", strings.Repeat("x", 253), strings.Repeat("y", 400)}
	for _, ip := range ips {
		for _, n := range nodes {
			if got, w := Hash(n, ip), want(n, ip); got != w {
				t.Errorf("Hash(%.12q, %v) = %x, want %x", n, ip, got, w)
			}
		}
	}
}

// The known answer pins the byte layout independently of the test's own
// reference formula.
func TestHashKnownAnswer(t *testing.T) {
	// sha256("n1#198.51.100.100"), first 8 bytes.
	sum := sha256.Sum256([]byte("n1#198.51.100.100"))
	if got, want := Hash("n1", netip.MustParseAddr("198.51.100.100")), binary.BigEndian.Uint64(sum[:8]); got != want {
		t.Fatalf("Hash = %x, want %x", got, want)
	}
}

func TestDiffSorted(t *testing.T) {
	tests := []struct {
		a, b           []string
		added, removed []string
	}{
		{nil, nil, nil, nil},
		{[]string{"a", "b"}, []string{"a", "b"}, nil, nil},
		{nil, []string{"a"}, []string{"a"}, nil},
		{[]string{"a"}, nil, nil, []string{"a"}},
		{[]string{"a", "c", "e"}, []string{"b", "c", "d", "f"}, []string{"b", "d", "f"}, []string{"a", "e"}},
	}
	for _, tt := range tests {
		added, removed := diffSorted(tt.a, tt.b)
		if diff := cmp.Diff(tt.added, added); diff != "" {
			t.Errorf("diffSorted(%v, %v) added (-want +got):\n%s", tt.a, tt.b, diff)
		}
		if diff := cmp.Diff(tt.removed, removed); diff != "" {
			t.Errorf("diffSorted(%v, %v) removed (-want +got):\n%s", tt.a, tt.b, diff)
		}
	}
}

// world is a random cluster that the test mutates one step at a time.
type world struct {
	r     *rand.Rand
	names []string
	nodes []Node
	live  []string
	addrs []Address
}

func newWorld(seed uint64, n, v int) *world {
	w := &world{r: rand.New(rand.NewPCG(seed, seed+1))}
	for i := range n {
		w.names = append(w.names, fmt.Sprintf("n%03d", i))
	}
	// An empty name is nonsense from the API's point of view, but the
	// Elector must still agree with Elect on it.
	w.names = append(w.names, "")
	for _, name := range w.names {
		w.nodes = append(w.nodes, Node{Name: name, Ready: true, Labels: map[string]string{"zone": fmt.Sprint(w.r.IntN(3))}})
		w.live = append(w.live, name)
	}
	for i := range v {
		w.addrs = append(w.addrs, w.address(i))
	}
	return w
}

func (w *world) address(i int) Address {
	a := Address{IP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})}
	for range w.r.IntN(3) {
		s := Service{Key: fmt.Sprint("ns/s", w.r.IntN(1000)), Local: w.r.IntN(3) == 0}
		for range w.r.IntN(4) {
			s.EndpointNodes = append(s.EndpointNodes, w.names[w.r.IntN(len(w.names))])
		}
		a.Services = append(a.Services, s)
	}
	if w.r.IntN(8) == 0 {
		zone := fmt.Sprint(w.r.IntN(3))
		a.NodeAllowed = func(l map[string]string) bool { return l["zone"] == zone }
	}
	return a
}

// step makes one random change of the kinds a speaker sees.
func (w *world) step() string {
	switch k := w.r.IntN(10); {
	case k < 3: // a member dies or leaves
		if len(w.live) > 0 {
			i := w.r.IntN(len(w.live))
			gone := w.live[i]
			w.live = slices.Delete(w.live, i, i+1)
			return "member " + gone + " gone"
		}
	case k < 5: // a member (re)joins, possibly twice in the list
		n := w.names[w.r.IntN(len(w.names))]
		w.live = append(w.live, n)
		return "member " + n + " joined"
	case k == 5: // a node's conditions or labels change
		i := w.r.IntN(len(w.nodes))
		n := w.nodes[i]
		n.Ready = w.r.IntN(4) != 0
		n.NetworkUnavailable = w.r.IntN(6) == 0
		n.Excluded = w.r.IntN(6) == 0
		n.Labels = map[string]string{"zone": fmt.Sprint(w.r.IntN(3))}
		w.nodes[i] = n
		return "node " + n.Name + " changed"
	case k == 6: // endpoints of some Services move
		for range 5 {
			i := w.r.IntN(len(w.addrs))
			w.addrs[i] = w.address(i)
		}
		return "Services changed"
	case k == 7: // an address is released, another assigned
		i := w.r.IntN(len(w.addrs))
		w.addrs = slices.Delete(w.addrs, i, i+1)
		w.addrs = append(w.addrs, w.address(1000+w.r.IntN(1000)))
		return "addresses changed"
	case k == 8: // the same address listed twice (the speaker never does; still equal)
		w.addrs = append(w.addrs, w.addrs[w.r.IntN(len(w.addrs))])
		return "duplicate address"
	}
	return "nothing"
}

// The Elector's incremental result must equal a full Elect after every
// change, whatever the sequence.
func TestElectorMatchesElect(t *testing.T) {
	for seed := range uint64(8) {
		w := newWorld(seed, 12, 60)
		var e Elector
		for i := range 60 {
			what := "start"
			if i > 0 {
				what = w.step()
			}
			want := Elect(w.addrs, w.nodes, w.live)
			got := e.Elect(w.addrs, w.nodes, w.live)
			// cmp.Diff only to explain a mismatch: on every step it would
			// cost more than the elections, under the race detector.
			if !maps.Equal(want, got) {
				t.Fatalf("seed %d step %d (%s): Elector differs from Elect (-want +got):\n%s", seed, i, what, cmp.Diff(want, got))
			}
		}
	}
}

// Feeding the same inputs twice changes nothing, and the result does not
// depend on input order.
func TestElectorIdempotentAndOrderFree(t *testing.T) {
	w := newWorld(99, 20, 500)
	var e Elector
	first := e.Elect(w.addrs, w.nodes, w.live)
	if diff := cmp.Diff(first, e.Elect(w.addrs, w.nodes, w.live)); diff != "" {
		t.Fatalf("second call differs (-first +second):\n%s", diff)
	}
	live := slices.Clone(w.live)
	w.r.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	if diff := cmp.Diff(first, e.Elect(w.addrs, w.nodes, live)); diff != "" {
		t.Fatalf("shuffled members differ (-first +second):\n%s", diff)
	}
}

// scaleWorld is the scale target: 250 nodes, 10,000 addresses,
// one in five with a Local Service whose endpoints sit on three nodes.
func scaleWorld() ([]Node, []string, []Address) {
	r := rand.New(rand.NewPCG(1, 2))
	var nodes []Node
	var live []string
	for i := range 250 {
		name := fmt.Sprintf("worker-%03d", i)
		nodes = append(nodes, Node{Name: name, Ready: true})
		live = append(live, name)
	}
	as := make([]Address, 10000)
	for i := range as {
		as[i] = Address{IP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})}
		s := Service{Key: fmt.Sprint("ns/s", i)}
		if i%5 == 0 {
			s.Local = true
			for range 3 {
				s.EndpointNodes = append(s.EndpointNodes, live[r.IntN(len(live))])
			}
		}
		as[i].Services = []Service{s}
	}
	return nodes, live, as
}

// BenchmarkElectScale is the full election, 250 nodes × 10,000 addresses.
func BenchmarkElectScale(b *testing.B) {
	nodes, live, as := scaleWorld()
	for b.Loop() {
		Elect(as, nodes, live)
	}
}

// BenchmarkElectorOneChange is what a speaker pays per membership change at
// that scale: each iteration is one member dying or coming back.
func BenchmarkElectorOneChange(b *testing.B) {
	nodes, live, as := scaleWorld()
	less := live[1:]
	var e Elector
	e.Elect(as, nodes, live)
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			e.Elect(as, nodes, less)
		} else {
			e.Elect(as, nodes, live)
		}
		i++
	}
}
