package main

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/ironlb/ironlb/speaker/election"
)

// bitset is a set of node indexes.
type bitset []uint64

func newBitset(n int) bitset         { return make(bitset, (n+63)/64) }
func (b bitset) set(i int)           { b[i/64] |= 1 << (i % 64) }
func (b bitset) clear(i int)         { b[i/64] &^= 1 << (i % 64) }
func (b bitset) has(i int) bool      { return i/64 < len(b) && b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) equal(o bitset) bool { return slices.Equal(b, o) }
func (b bitset) clone() bitset       { return slices.Clone(b) }
func (b bitset) key() string         { return fmt.Sprint([]uint64(b)) }
func (b bitset) count() int {
	c := 0
	for _, w := range b {
		c += bits.OnesCount64(w)
	}
	return c
}

// names lists the node names in b.
func (b bitset) names(n int) []string {
	var out []string
	for i := range n {
		if b.has(i) {
			out = append(out, nodeName(i))
		}
	}
	return out
}

// percentile is the nearest-rank percentile p (0-100) of ds; 0 for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// settledAt returns the moment a node's views started to satisfy good for
// good: the first view at or after t0 from which every later view (until
// the end of views) satisfies it. The view current at t0 counts from t0.
// ok is false when the last view does not satisfy good.
func settledAt(views []view, t0 time.Time, good func(bitset) bool) (at time.Time, ok bool) {
	var settled time.Time
	fine := false
	for i, v := range views {
		if v.at.Before(t0) {
			// Only the view current at t0 matters.
			if i+1 < len(views) && views[i+1].at.Before(t0) {
				continue
			}
			if fine = good(v.live); fine {
				settled = t0
			}
			continue
		}
		g := good(v.live)
		if g && !fine {
			settled = v.at
		}
		fine = g
	}
	return settled, fine
}

// falseDeaths counts the members that an observer's views dropped within
// [from, to] although they were not gone: every drop of a member not in
// gone is a false "dead" verdict (or a false "left").
func falseDeaths(views []view, from, to time.Time, gone bitset, n int) int {
	var prev bitset
	count := 0
	for _, v := range views {
		if v.at.After(to) {
			break
		}
		if prev != nil && !v.at.Before(from) {
			for j := range n {
				if prev.has(j) && !v.live.has(j) && !gone.has(j) {
					count++
				}
			}
		}
		prev = v.live
	}
	return count
}

// world is the election's input: nodes, and addresses with their Services.
type world struct {
	nodes []election.Node
	addrs []election.Address
}

// Data only: these addresses never reach a socket. 198.18.0.0/15 holds
// 131,072 of them.
func vip(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
}

// makeWorld is n Ready nodes and v addresses. Each address has a Service;
// one in ten is shared by a second Service (same policy and, for Local,
// the same pods, as sharing requires). localPct percent of the addresses
// are externalTrafficPolicy: Local with ready endpoints on one to three
// random nodes, like a Deployment of a few replicas.
func makeWorld(n, v, localPct int, seed uint64) world {
	r := rand.New(rand.NewPCG(seed, uint64(n)*1_000_003+uint64(v)))
	w := world{}
	for i := range n {
		w.nodes = append(w.nodes, election.Node{Name: nodeName(i), Ready: true})
	}
	for i := range v {
		s := election.Service{Key: fmt.Sprintf("ns%d/svc%d", i%50, i)}
		if r.IntN(100) < localPct {
			s.Local = true
			for range 1 + r.IntN(3) {
				s.EndpointNodes = append(s.EndpointNodes, nodeName(r.IntN(n)))
			}
			slices.Sort(s.EndpointNodes)
			s.EndpointNodes = slices.Compact(s.EndpointNodes)
		}
		a := election.Address{IP: vip(i), Services: []election.Service{s}}
		if r.IntN(10) == 0 {
			t := s
			t.Key += "-udp"
			a.Services = append(a.Services, t)
		}
		w.addrs = append(w.addrs, a)
	}
	return w
}

// owners elects with the given live set.
func (w world) owners(live bitset) map[netip.Addr]string {
	return election.Elect(w.addrs, w.nodes, live.names(len(w.nodes)))
}

// moved counts the addresses whose owner differs (gaining or losing one
// counts too).
func moved(before, after map[netip.Addr]string, addrs []election.Address) int {
	c := 0
	for _, a := range addrs {
		if before[a.IP] != after[a.IP] {
			c++
		}
	}
	return c
}

// agreement returns a test of a view: does it elect want for every
// address in affected? Results are cached per distinct view.
func (w world) agreement(affected []election.Address, want map[netip.Addr]string) func(bitset) bool {
	byName := make(map[string]election.Node, len(w.nodes))
	for _, n := range w.nodes {
		byName[n.Name] = n
	}
	cache := map[string]bool{}
	return func(live bitset) bool {
		k := live.key()
		if r, ok := cache[k]; ok {
			return r
		}
		names := live.names(len(w.nodes))
		r := true
		for _, a := range affected {
			if election.Owner(a.IP, election.Candidates(a, byName, names)) != want[a.IP] {
				r = false
				break
			}
		}
		cache[k] = r
		return r
	}
}

// electCost times, on w with everyone live, the speaker's Elector after
// one member dies (median of runs, each a death or a return) and one full
// Elect.
func electCost(w world, runs int) (incremental, full time.Duration) {
	all := newBitset(len(w.nodes))
	for i := range w.nodes {
		all.set(i)
	}
	less := all.clone()
	less.clear(len(w.nodes) / 2)
	liveAll, liveLess := all.names(len(w.nodes)), less.names(len(w.nodes))
	var e election.Elector
	e.Elect(w.addrs, w.nodes, liveAll)
	var ds []time.Duration
	for i := range runs {
		live := liveLess
		if i%2 == 1 {
			live = liveAll
		}
		t := time.Now()
		e.Elect(w.addrs, w.nodes, live)
		ds = append(ds, time.Since(t))
	}
	t := time.Now()
	election.Elect(w.addrs, w.nodes, liveAll)
	return percentile(ds, 50), time.Since(t)
}
