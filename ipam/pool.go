package ipam

import (
	"cmp"
	"container/heap"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
)

// Pool is the specification of one address pool.
type Pool struct {
	Name   string
	Ranges []Range
	// AutoAssign lets Services that name neither a pool nor an address
	// draw from this pool.
	AutoAssign bool
	// AvoidBuggyIPs withholds IPv4 addresses ending in .0 and .255.
	AvoidBuggyIPs bool
	// Namespaces, when not empty, are the only namespaces whose Services
	// may hold this pool's addresses.
	Namespaces []string
}

// Allows reports whether Services in namespace ns may use the pool.
func (p *Pool) Allows(ns string) bool {
	return len(p.Namespaces) == 0 || slices.Contains(p.Namespaces, ns)
}

// Size is the number of addresses the pool can hand out in family f.
func (p *Pool) Size(f Family) *big.Int {
	n := new(big.Int)
	for _, r := range p.Ranges {
		if r.Family() != f {
			continue
		}
		n.Add(n, r.Size())
		if p.AvoidBuggyIPs {
			n.Sub(n, buggyCount(r))
		}
	}
	return n
}

// Families lists the families the pool has addresses of, IPv4 first.
func (p *Pool) Families() []Family {
	var fs []Family
	for _, f := range []Family{IPv4, IPv6} {
		if slices.ContainsFunc(p.Ranges, func(r Range) bool { return r.Family() == f }) {
			fs = append(fs, f)
		}
	}
	return fs
}

// Overlap is a pair of ranges that share addresses.
type Overlap struct {
	Pool, OtherPool   string
	Range, OtherRange Range
}

// Overlaps returns every pair of overlapping ranges within or across the
// given pools, in address order. An empty result means the pools can be
// used together.
func Overlaps(pools []Pool) []Overlap {
	type owned struct {
		r    Range
		pool string
	}
	var all []owned
	for _, p := range pools {
		for _, r := range p.Ranges {
			all = append(all, owned{r, p.Name})
		}
	}
	slices.SortStableFunc(all, func(a, b owned) int {
		return cmp.Or(a.r.First.Compare(b.r.First), a.r.Last.Compare(b.r.Last))
	})
	var out []Overlap
	// After sorting by start, a range can only overlap ranges that start
	// before it ends; the inner loop stops at the first one that does not,
	// so the cost is O(n log n + overlaps).
	for i := range all {
		for j := i + 1; j < len(all) && all[j].r.Overlaps(all[i].r); j++ {
			out = append(out, Overlap{all[i].pool, all[j].pool, all[i].r, all[j].r})
		}
	}
	return out
}

// poolState is a Pool plus its allocation state.
type poolState struct {
	Pool
	fam [2]famState
}

// famState tracks the free addresses of one family of one pool.
//
// Free addresses are found in amortised O(1): a cursor walks the ranges
// once, in address order, and everything behind it is either in use or in
// the freed heap. Each address is stepped over by the cursor at most once
// per SetPools, so filling a pool costs O(n), not the O(n²) of a first-fit
// scan, and the lowest free address is always handed out first.
type famState struct {
	ranges []Range // sorted, non-overlapping
	ri     int     // index of the range the cursor is in; len(ranges) when done
	next   netip.Addr
	freed  addrHeap // freed addresses behind the cursor
	queued map[netip.Addr]struct{}
	total  *big.Int
	used   int
}

func newFamState(p *Pool, f Family) famState {
	s := famState{total: p.Size(f)}
	for _, r := range p.Ranges {
		if r.Family() == f {
			s.ranges = append(s.ranges, r)
		}
	}
	slices.SortFunc(s.ranges, func(a, b Range) int { return a.First.Compare(b.First) })
	if len(s.ranges) > 0 {
		s.next = s.ranges[0].First
	}
	return s
}

// behind reports whether a is behind the cursor, where the cursor will not
// find it again.
func (s *famState) behind(a netip.Addr) bool {
	return s.ri >= len(s.ranges) || a.Less(s.next)
}

// advance returns the address under the cursor and moves the cursor on.
func (s *famState) advance() (netip.Addr, bool) {
	if s.ri >= len(s.ranges) {
		return netip.Addr{}, false
	}
	a := s.next
	if a == s.ranges[s.ri].Last {
		s.ri++
		if s.ri < len(s.ranges) {
			s.next = s.ranges[s.ri].First
		}
	} else {
		s.next = a.Next()
	}
	return a, true
}

// freedAt records that a became free, so the cursor's invariant holds.
func (s *famState) freedAt(a netip.Addr) {
	if !s.behind(a) {
		return
	}
	if s.queued == nil {
		s.queued = make(map[netip.Addr]struct{})
	}
	// A queued address may have been taken by an explicit request and freed
	// again; queue it once so churn cannot grow the heap without bound.
	if _, ok := s.queued[a]; ok {
		return
	}
	s.queued[a] = struct{}{}
	heap.Push(&s.freed, a)
}

// take returns the lowest free address, using used to tell which are held.
func (s *famState) take(avoidBuggy bool, used func(netip.Addr) bool) (netip.Addr, bool) {
	for s.freed.Len() > 0 {
		a := heap.Pop(&s.freed).(netip.Addr)
		delete(s.queued, a)
		// The heap is lazy: an address freed and then requested explicitly
		// stays queued, so check it again.
		if !used(a) && !(avoidBuggy && buggy(a)) {
			return a, true
		}
	}
	for {
		a, ok := s.advance()
		if !ok {
			return netip.Addr{}, false
		}
		if !used(a) && !(avoidBuggy && buggy(a)) {
			return a, true
		}
	}
}

type addrHeap []netip.Addr

func (h addrHeap) Len() int           { return len(h) }
func (h addrHeap) Less(i, j int) bool { return h[i].Less(h[j]) }
func (h addrHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *addrHeap) Push(x any)        { *h = append(*h, x.(netip.Addr)) }
func (h *addrHeap) Pop() any {
	old := *h
	a := old[len(old)-1]
	*h = old[:len(old)-1]
	return a
}

// span maps one range to its pool, for finding an address's pool by binary
// search.
type span struct {
	r Range
	p *poolState
}

// buildPools validates pools and turns them into allocation state.
func buildPools(pools []Pool) (map[string]*poolState, []*poolState, []span, error) {
	byName := make(map[string]*poolState, len(pools))
	var problems []string
	for i := range pools {
		p := pools[i]
		switch {
		case p.Name == "":
			problems = append(problems, fmt.Sprintf("pool #%d has no name", i+1))
			continue
		case byName[p.Name] != nil:
			problems = append(problems, fmt.Sprintf("pool %q is defined twice", p.Name))
			continue
		case len(p.Ranges) == 0:
			problems = append(problems, fmt.Sprintf("pool %q has no addresses", p.Name))
		}
		for _, r := range p.Ranges {
			if !r.First.IsValid() || !r.Last.IsValid() || r.First.Is4() != r.Last.Is4() || r.Last.Less(r.First) {
				problems = append(problems, fmt.Sprintf("pool %q has an invalid range %s", p.Name, r))
			}
		}
		p.Ranges = slices.Clone(p.Ranges)
		p.Namespaces = slices.Clone(p.Namespaces)
		ps := &poolState{Pool: p}
		ps.fam[0] = newFamState(&ps.Pool, IPv4)
		ps.fam[1] = newFamState(&ps.Pool, IPv6)
		byName[p.Name] = ps
	}
	for _, o := range Overlaps(pools) {
		problems = append(problems, fmt.Sprintf("range %s of pool %q overlaps range %s of pool %q", o.Range, o.Pool, o.OtherRange, o.OtherPool))
	}
	if len(problems) > 0 {
		return nil, nil, nil, newErr(ErrInvalid, "invalid pools: %s", strings.Join(problems, "; "))
	}
	ordered := make([]*poolState, 0, len(byName))
	var spans []span
	for _, ps := range byName {
		ordered = append(ordered, ps)
		for _, r := range ps.Ranges {
			spans = append(spans, span{r, ps})
		}
	}
	slices.SortFunc(ordered, func(a, b *poolState) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(spans, func(a, b span) int { return a.r.First.Compare(b.r.First) })
	return byName, ordered, spans, nil
}

// poolIn finds the pool holding a in spans, in O(log ranges).
func poolIn(spans []span, a netip.Addr) *poolState {
	i, _ := slices.BinarySearchFunc(spans, a, func(s span, a netip.Addr) int {
		if s.r.Last.Less(a) {
			return -1
		}
		return 1
	})
	if i < len(spans) && spans[i].r.Contains(a) {
		return spans[i].p
	}
	return nil
}
