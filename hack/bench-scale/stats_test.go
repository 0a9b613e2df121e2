package main

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ironlb/ironlb/speaker/election"
)

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {99, 10}, {100, 10}, {10, 1}, {0, 1}, {90, 9}} {
		if got := percentile(ds, tt.p); got != tt.want {
			t.Errorf("percentile(p%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
}

func bs(n int, members ...int) bitset {
	b := newBitset(n)
	for _, m := range members {
		b.set(m)
	}
	return b
}

func TestSettledAt(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// The test: node 2 is gone from the view.
	good := func(b bitset) bool { return !b.has(2) }
	tests := []struct {
		name   string
		views  []view
		want   time.Duration
		wantOK bool
	}{
		{"dropped after the kill", []view{{at(-500), bs(3, 0, 1, 2)}, {at(700), bs(3, 0, 1)}}, 700 * time.Millisecond, true},
		{"never dropped", []view{{at(-500), bs(3, 0, 1, 2)}}, 0, false},
		{"flapped: the last good stretch counts", []view{
			{at(-500), bs(3, 0, 1, 2)}, {at(300), bs(3, 0, 1)}, {at(400), bs(3, 0, 1, 2)}, {at(900), bs(3, 0, 1)},
		}, 900 * time.Millisecond, true},
		{"good before the kill already", []view{{at(-900), bs(3, 0, 1, 2)}, {at(-100), bs(3, 0, 1)}}, 0, true},
		{"only the view current at t0 counts", []view{{at(-900), bs(3, 0, 1)}, {at(-100), bs(3, 0, 1, 2)}, {at(50), bs(3, 0, 1)}}, 50 * time.Millisecond, true},
		{"good, then bad at the end", []view{{at(-500), bs(3, 0, 1, 2)}, {at(300), bs(3, 0, 1)}, {at(800), bs(3, 0, 1, 2)}}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := settledAt(tt.views, t0, good)
			if ok != tt.wantOK || (ok && got.Sub(t0) != tt.want) {
				t.Errorf("settledAt = %v after t0, %v; want %v, %v", got.Sub(t0), ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestFalseDeaths(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	views := []view{
		{at(-100), bs(4, 0, 1, 2, 3)},
		{at(100), bs(4, 0, 1, 2)},     // 3 dropped: really gone
		{at(200), bs(4, 0, 2)},        // 1 dropped: false
		{at(300), bs(4, 0, 1, 2)},     // 1 back
		{at(400), bs(4, 0)},           // 1 and 2 dropped: two false verdicts
		{at(2000), bs(4, 0, 1, 2, 3)}, // after the window
		{at(2100), bs(4, 0)},          // outside the window: not counted
	}
	if got := falseDeaths(views, t0, at(1000), bs(4, 3), 4); got != 3 {
		t.Errorf("falseDeaths = %d, want 3", got)
	}
	// The first view in the window is compared with the one before it.
	if got := falseDeaths(views, at(150), at(250), bs(4, 3), 4); got != 1 {
		t.Errorf("falseDeaths in [150,250] = %d, want 1", got)
	}
}

func TestMakeWorld(t *testing.T) {
	w := makeWorld(50, 2000, 20, 1)
	if len(w.nodes) != 50 || len(w.addrs) != 2000 {
		t.Fatalf("world has %d nodes and %d addresses", len(w.nodes), len(w.addrs))
	}
	local, shared := 0, 0
	seen := map[netip.Addr]bool{}
	for _, a := range w.addrs {
		if seen[a.IP] {
			t.Fatalf("address %v twice", a.IP)
		}
		seen[a.IP] = true
		if a.Services[0].Local {
			local++
			if len(a.Services[0].EndpointNodes) == 0 {
				t.Errorf("%v: Local Service without endpoints", a.IP)
			}
		}
		if len(a.Services) == 2 {
			shared++
			if a.Services[0].Local != a.Services[1].Local {
				t.Errorf("%v: shared by Services of different policies", a.IP)
			}
		}
	}
	if local < 300 || local > 500 {
		t.Errorf("%d of 2000 addresses are Local, want about 400", local)
	}
	if shared < 120 || shared > 280 {
		t.Errorf("%d of 2000 addresses are shared, want about 200", shared)
	}
}

// A death moves about 1/N of the addresses, and the return moves them
// back; agreement holds exactly for the survivors' view.
func TestMovedAndAgreement(t *testing.T) {
	const n = 20
	w := makeWorld(n, 4000, 20, 3)
	all := newBitset(n)
	for i := range n {
		all.set(i)
	}
	less := all.clone()
	less.clear(7)
	before, after := w.owners(all), w.owners(less)
	m := moved(before, after, w.addrs)
	if pct := 100 * float64(m) / 4000; pct < 2.5 || pct > 7.5 {
		t.Errorf("one death of %d moved %.1f%% of the addresses, want about %.1f%%", n, pct, 100.0/n)
	}
	if back := moved(after, before, w.addrs); back != m {
		t.Errorf("the return moved %d, the death %d", back, m)
	}
	var affected []election.Address
	for _, a := range w.addrs {
		if before[a.IP] == nodeName(7) {
			affected = append(affected, a)
		}
	}
	good := w.agreement(affected, after)
	if !good(less) {
		t.Error("the survivors' own view does not agree with their owners")
	}
	if good(all) {
		t.Error("a view that still has the dead owner agrees")
	}
	other := less.clone()
	other.clear(3)
	if good(other) != (moved(after, w.owners(other), affected) == 0) {
		t.Error("a view missing another node: agreement must follow whether the affected owners change")
	}
}
