package ipam

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func pool(name string, ranges ...string) Pool {
	p := Pool{Name: name, AutoAssign: true}
	for _, r := range ranges {
		p.Ranges = append(p.Ranges, mustRange(r))
	}
	return p
}

func newAlloc(t testing.TB, pools ...Pool) *Allocator {
	t.Helper()
	a := New()
	if m, err := a.SetPools(pools); err != nil || m != nil {
		t.Fatalf("SetPools: %v %v", m, err)
	}
	return a
}

func svc(key string) Service { return Service{Key: key} }

func shared(key, sharing string, ports ...string) Service {
	s := Service{Key: key, SharingKey: sharing}
	for _, p := range ports {
		proto, num, _ := strings.Cut(p, "/")
		var n int32
		fmt.Sscan(num, &n)
		s.Ports = append(s.Ports, Port{proto, n})
	}
	return s
}

func mustAlloc(t *testing.T, a *Allocator, s Service, f Family, pool string) netip.Addr {
	t.Helper()
	got, err := a.Allocate(s, f, pool)
	if err != nil {
		t.Fatalf("Allocate(%s): %v", s.Key, err)
	}
	return got
}

// The ingress walkthrough: the first Service gets the first address.
func TestAllocateLowestFirst(t *testing.T) {
	a := newAlloc(t, pool("default", "192.168.56.100-192.168.56.110"))
	var got []netip.Addr
	for i := range 11 {
		got = append(got, mustAlloc(t, a, svc(fmt.Sprintf("ingress-nginx/s%d", i)), IPv4, ""))
	}
	if got[0] != ip("192.168.56.100") || got[10] != ip("192.168.56.110") {
		t.Errorf("allocated %v, want .100 through .110 in order", got)
	}
	_, err := a.Allocate(svc("ingress-nginx/late"), IPv4, "")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), `"default"`) {
		t.Fatalf("12th Allocate: %v, want ErrExhausted naming the pool", err)
	}
	// Exhaustion then recovery: a release makes that address the next one.
	a.Release("ingress-nginx/s3")
	if got := mustAlloc(t, a, svc("ingress-nginx/late"), IPv4, ""); got != ip("192.168.56.103") {
		t.Errorf("after release got %s, want 192.168.56.103", got)
	}
}

func TestAllocateRules(t *testing.T) {
	restricted := pool("team", "10.0.1.0/24")
	restricted.Namespaces = []string{"team-a"}
	manual := pool("manual", "10.0.2.0/24")
	manual.AutoAssign = false
	buggyPool := pool("buggy", "10.0.3.0/24")
	buggyPool.AvoidBuggyIPs = true
	v6 := pool("v6", "2001:db8::/120")

	tests := []struct {
		name    string
		setup   func(a *Allocator)
		svc     Service
		family  Family
		pool    string
		request string // address for Assign; empty means Allocate
		want    string // address, when no error
		wantErr error
		errText []string
	}{
		{name: "auto-assign goes to the first pool by name", svc: svc("ns/a"), family: IPv4, want: "10.0.3.1"}, // "buggy" sorts first; its .0 is withheld
		{name: "named pool", svc: svc("ns/a"), family: IPv4, pool: "manual", want: "10.0.2.0"},
		{name: "buggy ips skipped", svc: svc("ns/a"), family: IPv4, pool: "buggy", want: "10.0.3.1"},
		{name: "ipv6", svc: svc("ns/a"), family: IPv6, want: "2001:db8::"},
		{name: "unknown pool", svc: svc("ns/a"), family: IPv4, pool: "nope", wantErr: ErrUnknownPool, errText: []string{`"nope"`}},
		{name: "pool without family", svc: svc("ns/a"), family: IPv6, pool: "manual", wantErr: ErrNoPool, errText: []string{`"manual"`, "IPv6"}},
		{name: "namespace not allowed by named pool", svc: svc("other/a"), family: IPv4, pool: "team", wantErr: ErrNamespace, errText: []string{`"team"`, `"other"`, "team-a"}},
		{name: "namespace allowed", svc: svc("team-a/a"), family: IPv4, pool: "team", want: "10.0.1.0"},
		{name: "requested address", svc: svc("ns/a"), request: "10.0.2.7", want: "10.0.2.7"},
		{name: "requested address in a restricted pool", svc: svc("ns/a"), request: "10.0.1.7", wantErr: ErrNamespace, errText: []string{"10.0.1.7", `"team"`, `"ns"`}},
		{name: "requested address outside every pool", svc: svc("ns/a"), request: "172.16.0.1", wantErr: ErrNotInPool, errText: []string{"172.16.0.1"}},
		{name: "requested address in another pool", svc: svc("ns/a"), request: "10.0.2.7", pool: "default", wantErr: ErrWrongPool, errText: []string{"10.0.2.7", `"manual"`, `"default"`}},
		{name: "requested buggy address", svc: svc("ns/a"), request: "10.0.3.255", wantErr: ErrReserved, errText: []string{"10.0.3.255", `"buggy"`}},
		{name: "requested address in use", setup: func(a *Allocator) { a.Assign(svc("ns/b"), ip("10.0.2.7"), "") }, svc: svc("ns/a"), request: "10.0.2.7", wantErr: ErrInUse, errText: []string{"10.0.2.7", "ns/b"}},
		{name: "invalid key", svc: svc("nokey"), family: IPv4, wantErr: ErrInvalid, errText: []string{`"nokey"`}},
		{name: "invalid address", svc: svc("ns/a"), request: "::ffff:10.0.2.7", wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAlloc(t, pool("default", "10.0.0.0/24"), restricted, manual, buggyPool, v6)
			if tt.setup != nil {
				tt.setup(a)
			}
			var got netip.Addr
			var err error
			if tt.request != "" {
				got = ip(tt.request)
				err = a.Assign(tt.svc, got, tt.pool)
			} else {
				got, err = a.Allocate(tt.svc, tt.family, tt.pool)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				for _, w := range tt.errText {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %s", err, w)
					}
				}
				if addrs := a.Addrs(tt.svc.Key); addrs != nil {
					t.Errorf("a failed call left %s holding %v", tt.svc.Key, addrs)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got != ip(tt.want) {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			if h := a.Holders(got); !slices.Equal(h, []string{tt.svc.Key}) {
				t.Errorf("Holders(%s) = %v", got, h)
			}
		})
	}
}

func TestNamespaceRestrictedAutoAssign(t *testing.T) {
	team := pool("a-team", "10.0.1.0/24")
	team.Namespaces = []string{"team-a"}
	a := newAlloc(t, team)
	_, err := a.Allocate(svc("other/x"), IPv4, "")
	if !errors.Is(err, ErrNamespace) || !strings.Contains(err.Error(), `"other"`) {
		t.Fatalf("Allocate from another namespace: %v, want ErrNamespace naming it", err)
	}
	a = newAlloc(t, team, pool("z-open", "10.0.9.0/24"))
	if got := mustAlloc(t, a, svc("other/x"), IPv4, ""); got != ip("10.0.9.0") {
		t.Errorf("got %s, want the open pool's 10.0.9.0", got)
	}
	if got := mustAlloc(t, a, svc("team-a/x"), IPv4, ""); got != ip("10.0.1.0") {
		t.Errorf("got %s, want the team pool's 10.0.1.0 (first by name)", got)
	}
}

func TestSharing(t *testing.T) {
	local := func(s Service, sel string) Service { s.Local, s.Selector = true, sel; return s }
	tests := []struct {
		name       string
		first, sec Service
		wantErr    error
		reason     string
	}{
		{name: "same key, disjoint ports", first: shared("ns/a", "k", "TCP/80"), sec: shared("ns/b", "k", "TCP/443", "UDP/80")},
		{name: "no key on holder", first: svc("ns/a"), sec: shared("ns/b", "k", "TCP/443"), wantErr: ErrInUse, reason: "no sharing key"},
		{name: "no key on newcomer", first: shared("ns/a", "k", "TCP/80"), sec: svc("ns/b"), wantErr: ErrInUse, reason: "this Service does not allow sharing"},
		{name: "different keys", first: shared("ns/a", "k", "TCP/80"), sec: shared("ns/b", "j", "TCP/443"), wantErr: ErrInUse, reason: `"k" differs from this Service's "j"`},
		{name: "port clash", first: shared("ns/a", "k", "TCP/80"), sec: shared("ns/b", "k", "TCP/80"), wantErr: ErrSharing, reason: "both use port TCP/80"},
		{name: "policy clash", first: shared("ns/a", "k", "TCP/80"), sec: local(shared("ns/b", "k", "TCP/443"), "app=x"), wantErr: ErrSharing, reason: "externalTrafficPolicy Cluster and this Service uses Local"},
		{name: "local, same selector", first: local(shared("ns/a", "k", "TCP/80"), "app=x"), sec: local(shared("ns/b", "k", "TCP/443"), "app=x")},
		{name: "local, different selector", first: local(shared("ns/a", "k", "TCP/80"), "app=x"), sec: local(shared("ns/b", "k", "TCP/443"), "app=y"), wantErr: ErrSharing, reason: "select different pods"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAlloc(t, pool("p", "10.0.0.0/24"))
			addr := mustAlloc(t, a, tt.first, IPv4, "")
			err := a.Assign(tt.sec, addr, "")
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Assign: %v", err)
				}
				if h := a.Holders(addr); len(h) != 2 {
					t.Fatalf("Holders = %v, want both", h)
				}
				// Allocate also joins the shared address by key.
				c := tt.sec
				c.Key = "ns/c"
				c.Ports = []Port{{"TCP", 8080}}
				if got := mustAlloc(t, a, c, IPv4, ""); got != addr {
					t.Errorf("third sharer got %s, want the shared %s", got, addr)
				}
				// The address is freed only when the last holder goes.
				a.Release("ns/a")
				a.Release("ns/b")
				if h := a.Holders(addr); !slices.Equal(h, []string{"ns/c"}) {
					t.Errorf("after two releases Holders = %v", h)
				}
				a.Release("ns/c")
				if got := mustAlloc(t, a, svc("ns/d"), IPv4, ""); got != addr {
					t.Errorf("freed shared address not reused: got %s", got)
				}
				return
			}
			var iu *InUseError
			if !errors.Is(err, tt.wantErr) || !errors.As(err, &iu) {
				t.Fatalf("Assign: %v, want %v as *InUseError", err, tt.wantErr)
			}
			if iu.Holder != "ns/a" || iu.Addr != addr || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q: want holder ns/a, address %s, reason %q", err, addr, tt.reason)
			}
			// An unshareable Service asking for any address gets another one.
			if got := mustAlloc(t, a, tt.sec, IPv4, ""); got == addr {
				t.Errorf("Allocate put %s on the conflicting address", tt.sec.Key)
			}
		})
	}
}

func TestUpdateSharingChecked(t *testing.T) {
	a := newAlloc(t, pool("p", "10.0.0.0/24"))
	addr := mustAlloc(t, a, shared("ns/a", "k", "TCP/80"), IPv4, "")
	if err := a.Assign(shared("ns/b", "k", "TCP/443"), addr, ""); err != nil {
		t.Fatal(err)
	}
	// b changes its port to clash with a: refused, and b keeps its old data.
	if err := a.Assign(shared("ns/b", "k", "TCP/80"), addr, ""); !errors.Is(err, ErrSharing) {
		t.Fatalf("clashing update: %v, want ErrSharing", err)
	}
	if err := a.Assign(shared("ns/c", "k", "TCP/443"), addr, ""); !errors.Is(err, ErrSharing) {
		t.Fatalf("refused update was applied: c could not clash on 443 otherwise (%v)", err)
	}
	// b drops its key while sharing: refused.
	if err := a.Assign(svc("ns/b"), addr, ""); !errors.Is(err, ErrInUse) {
		t.Fatalf("dropping the key while sharing: %v, want ErrInUse", err)
	}
	// Alone, b may drop its key, and then nobody can join it.
	a.Release("ns/a")
	if err := a.Assign(svc("ns/b"), addr, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Assign(shared("ns/c", "k", "TCP/22"), addr, ""); !errors.Is(err, ErrInUse) {
		t.Fatalf("joining an unshared address: %v", err)
	}
	if got := mustAlloc(t, a, shared("ns/c", "k", "TCP/22"), IPv4, ""); got == addr {
		t.Error("sharing index still lists an address whose holder dropped its key")
	}
}

// Regression: a sharer that drops its key while moving to another address
// must not take its co-holders' chain with it.
func TestMoveAwayDroppingKey(t *testing.T) {
	a := newAlloc(t, pool("p", "10.0.0.0/24"))
	x := mustAlloc(t, a, shared("ns/a", "k", "TCP/80"), IPv4, "")
	if err := a.Assign(shared("ns/b", "k", "TCP/81"), x, ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Assign(svc("ns/b"), ip("10.0.0.50"), ""); err != nil {
		t.Fatal(err)
	}
	if got := a.Holders(x); !slices.Equal(got, []string{"ns/a"}) {
		t.Errorf("Holders(%s) = %v, want [ns/a]", x, got)
	}
	checkConsistent(t, a)
}

func TestDualStack(t *testing.T) {
	a := newAlloc(t, pool("dual", "10.0.0.0/24", "2001:db8::/120"))
	s := svc("ns/web")
	v4 := mustAlloc(t, a, s, IPv4, "")
	v6 := mustAlloc(t, a, s, IPv6, "")
	if diff := cmp.Diff([]netip.Addr{ip("10.0.0.0"), ip("2001:db8::")}, a.Addrs("ns/web"), cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("Addrs (-want +got):\n%s", diff)
	}
	// Allocating again is idempotent.
	if again := mustAlloc(t, a, s, IPv4, ""); again != v4 {
		t.Errorf("second Allocate moved %s to %s", v4, again)
	}
	a.ReleaseAddr("ns/web", v6)
	if got := a.Addrs("ns/web"); len(got) != 1 || got[0] != v4 {
		t.Errorf("after ReleaseAddr(v6) Addrs = %v", got)
	}
	// A second request in the same family replaces the first.
	if err := a.Assign(s, ip("10.0.0.9"), ""); err != nil {
		t.Fatal(err)
	}
	if got := a.Holders(v4); got != nil {
		t.Errorf("replaced address still held by %v", got)
	}
}

func TestStats(t *testing.T) {
	p := pool("p", "10.0.0.0/24", "2001:db8::/64")
	p.AvoidBuggyIPs = true
	a := newAlloc(t, p)
	mustAlloc(t, a, svc("ns/a"), IPv4, "")
	mustAlloc(t, a, shared("ns/b", "k", "TCP/1"), IPv6, "")
	if err := a.Assign(shared("ns/c", "k", "TCP/2"), ip("2001:db8::"), ""); err != nil {
		t.Fatal(err)
	}
	got := a.Stats()
	want := []string{"p IPv4 254 1", "p IPv6 18446744073709551616 1"}
	var gotS []string
	for _, s := range got {
		gotS = append(gotS, fmt.Sprintf("%s %s %s %d", s.Pool, s.Family, s.Total, s.Used))
	}
	if diff := cmp.Diff(want, gotS); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

func TestSetPools(t *testing.T) {
	a := newAlloc(t, pool("p", "10.0.0.0/24"), pool("q", "10.0.1.0/24"))
	mustAlloc(t, a, svc("ns/a"), IPv4, "")     // 10.0.0.0
	mustAlloc(t, a, svc("ns/b"), IPv4, "q")    // 10.0.1.0
	mustAlloc(t, a, svc("other/c"), IPv4, "p") // 10.0.0.1

	restricted := pool("p", "10.0.0.0/24")
	restricted.Namespaces = []string{"ns"}
	buggyP := pool("p", "10.0.0.0/24")
	buggyP.AvoidBuggyIPs = true
	misfits, err := a.SetPools([]Pool{restricted})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range misfits {
		got = append(got, m.String())
	}
	want := []string{
		`ns/b holds 10.0.1.0, which is not in any pool of the new config`,
		`other/c holds 10.0.0.1, which is in pool "p", which the new config closes to namespace "other"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("misfits (-want +got):\n%s", diff)
	}
	if m, _ := a.SetPools([]Pool{buggyP, pool("q", "10.0.1.0/24")}); len(m) != 1 || m[0].Key != "ns/a" {
		t.Errorf("avoid-buggy-ips misfits = %v, want ns/a's 10.0.0.0", m)
	}
	// Refused configs changed nothing.
	if got := mustAlloc(t, a, svc("ns/d"), IPv4, "q"); got != ip("10.0.1.1") {
		t.Errorf("after refused SetPools got %s, want 10.0.1.1", got)
	}
	// Invalid pools.
	if _, err := a.SetPools([]Pool{pool("x", "10.0.0.0/24"), pool("x", "10.9.0.0/24"), pool("y", "10.0.0.128/25"), {Name: "z"}}); !errors.Is(err, ErrInvalid) ||
		!strings.Contains(err.Error(), `"x" is defined twice`) || !strings.Contains(err.Error(), `"z" has no addresses`) || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("invalid pools: %v", err)
	}
	// Growing a pool keeps everyone and hands out the new space.
	if m, err := a.SetPools([]Pool{pool("p", "10.0.0.0/24"), pool("q", "10.0.1.0/30", "10.0.1.4/30")}); err != nil || m != nil {
		t.Fatalf("compatible SetPools: %v %v", m, err)
	}
	for _, k := range []string{"ns/a", "ns/b", "other/c", "ns/d"} {
		if len(a.Addrs(k)) != 1 {
			t.Errorf("%s lost its address", k)
		}
	}
	if got := mustAlloc(t, a, svc("ns/e"), IPv4, "q"); got != ip("10.0.1.2") {
		t.Errorf("after SetPools got %s, want 10.0.1.2", got)
	}
	st := a.Stats()
	if st[1].Pool != "q" || st[1].Used != 3 {
		t.Errorf("Stats after SetPools = %+v, want q with 3 used", st)
	}
}

func TestRestoreConflicts(t *testing.T) {
	a := newAlloc(t, pool("p", "10.0.0.0/24", "2001:db8::/120"))
	errs := a.Restore([]Assignment{
		{Service: svc("ns/b"), Addrs: []netip.Addr{ip("10.0.0.5")}},
		{Service: svc("ns/a"), Addrs: []netip.Addr{ip("10.0.0.5"), ip("2001:db8::5")}},
		{Service: svc("ns/c"), Addrs: []netip.Addr{ip("192.0.2.1")}},
		{Service: svc("ns/d"), Addrs: []netip.Addr{ip("10.0.0.6"), ip("10.0.0.7")}},
	})
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	want := []string{
		"cannot keep address 10.0.0.5 of ns/b: address 10.0.0.5 is in use by ns/a: it does not allow sharing (it has no sharing key)",
		"cannot keep address 192.0.2.1 of ns/c: address 192.0.2.1 is not in any address pool; request an address from a pool in the config",
		"cannot keep address 10.0.0.7 of ns/d: the Service already has a IPv4 address",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Restore errors (-want +got):\n%s", diff)
	}
	if h := a.Holders(ip("10.0.0.6")); !slices.Equal(h, []string{"ns/d"}) {
		t.Errorf("Holders(10.0.0.6) = %v", h)
	}
}

// snapshot builds a random consistent set of assignments, with some shared.
func snapshot(r *rand.Rand, n int) []Assignment {
	var out []Assignment
	for i := range n {
		s := shared(fmt.Sprintf("ns%d/svc%d", i%7, i), "", fmt.Sprintf("TCP/%d", i))
		ipn := r.IntN(4 * n)
		if i%5 == 0 {
			// Every fifth Service shares with the Service at i-1's address
			// when that one shares too: give both the same key.
			s.SharingKey = "k"
			ipn = 4*n + i/10
		}
		out = append(out, Assignment{Service: s, Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(ipn >> 8), byte(ipn)})}})
	}
	return out
}

// TestRestoreOrderIndependent: restoring the same snapshot in any order
// gives every Service the same addresses and the same errors. A few trials
// here; TestRestoreOrderIndependentLong (integration tier) runs many.
func TestRestoreOrderIndependent(t *testing.T) { restoreOrderIndependent(t, 5) }

func restoreOrderIndependent(t *testing.T, trials int) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range trials {
		snap := snapshot(r, 300)
		base := newAlloc(t, pool("p", "10.0.0.0/16"))
		baseErrs := base.Restore(snap)
		for range 5 {
			perm := slices.Clone(snap)
			r.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			a := newAlloc(t, pool("p", "10.0.0.0/16"))
			errs := a.Restore(perm)
			if fmt.Sprint(errs) != fmt.Sprint(baseErrs) {
				t.Fatalf("trial %d: errors depend on order:\n%v\n%v", trial, baseErrs, errs)
			}
			for _, as := range snap {
				if !slices.Equal(a.Addrs(as.Service.Key), base.Addrs(as.Service.Key)) {
					t.Fatalf("trial %d: %s restored to %v in one order, %v in another", trial, as.Service.Key, base.Addrs(as.Service.Key), a.Addrs(as.Service.Key))
				}
			}
		}
	}
}

// TestNeverTwice drives random operations and checks after each one that no
// address is held by two Services that may not share it, and that restored
// addresses are never handed out again. A few trials here, as every step
// checks every invariant; TestNeverTwiceLong (integration tier) runs many.
func TestNeverTwice(t *testing.T) { neverTwice(t, 6) }

func neverTwice(t *testing.T, trials int) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range trials {
		p := pool("p", "10.0.0.0/26", "2001:db8::/122")
		p.AvoidBuggyIPs = trial%2 == 0
		a := newAlloc(t, p, pool("q", "10.0.1.0/28"))
		a.Restore(snapshot(r, 20))
		holders := map[string]bool{}
		for step := range 400 {
			key := fmt.Sprintf("ns/s%d", r.IntN(120))
			s := svc(key)
			if r.IntN(3) == 0 {
				s = shared(key, fmt.Sprint("k", r.IntN(2)), fmt.Sprintf("TCP/%d", r.IntN(4)))
			}
			switch op := r.IntN(10); {
			case op < 5:
				f := IPv4
				if r.IntN(3) == 0 {
					f = IPv6
				}
				if _, err := a.Allocate(s, f, ""); err == nil {
					holders[key] = true
				} else if !errors.Is(err, ErrExhausted) && !errors.Is(err, ErrInUse) {
					t.Fatalf("step %d: Allocate: %v", step, err)
				}
			case op < 7:
				a.Assign(s, netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(64))}), "")
			case op < 9:
				a.Release(key)
			default:
				extra := pool("q", "10.0.1.0/28")
				if r.IntN(2) == 0 {
					extra = pool("q", "10.0.1.0/27")
				}
				a.SetPools([]Pool{p, extra})
			}
			checkConsistent(t, a)
		}
	}
}

// checkConsistent checks the allocator's invariants from the outside.
func checkConsistent(t *testing.T, a *Allocator) {
	t.Helper()
	seen := map[netip.Addr][]string{}
	for key, h := range a.svcs {
		for _, addr := range h.addrs {
			if addr.IsValid() {
				seen[addr] = append(seen[addr], key)
			}
		}
	}
	used := map[string]int{}
	for addr, keys := range seen {
		got := a.Holders(addr)
		slices.Sort(got)
		slices.Sort(keys)
		if !slices.Equal(got, keys) {
			t.Fatalf("Holders(%s) = %v, Services say %v", addr, got, keys)
		}
		if len(keys) > 1 {
			first := a.svcs[keys[0]]
			for _, k := range keys[1:] {
				other := a.svcs[k]
				s := Service{Key: k, SharingKey: other.share.key, Ports: other.share.ports}
				if reason, _ := conflict(&s, first); reason != "" {
					t.Fatalf("%s shared by %v although %s", addr, keys, reason)
				}
			}
		}
		ps, _ := a.PoolOf(addr)
		used[ps+FamilyOf(addr).String()]++
	}
	for _, s := range a.Stats() {
		if s.Used != used[s.Pool+s.Family.String()] {
			t.Fatalf("Stats %s %s used %d, counted %d", s.Pool, s.Family, s.Used, used[s.Pool+s.Family.String()])
		}
	}
}

// BenchmarkAllocate fills a /16 pool with n Services, one port each, and
// reports the cost per allocation. A flat allocator costs the same per
// allocation at n=60000 as at n=1000.
func BenchmarkAllocate(b *testing.B) {
	for _, n := range []int{1000, 60000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			svcs := make([]Service, n)
			for i := range svcs {
				svcs[i] = Service{Key: fmt.Sprintf("ns/svc-%d", i), Ports: []Port{{"TCP", 80}}}
			}
			p := []Pool{pool("big", "10.0.0.0/16")}
			var ms0, ms1 runtime.MemStats
			var total int
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				a := New()
				a.SetPools(p)
				runtime.ReadMemStats(&ms0)
				b.StartTimer()
				for i := range svcs {
					if _, err := a.Allocate(svcs[i], IPv4, ""); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				runtime.ReadMemStats(&ms1)
				total += int(ms1.TotalAlloc - ms0.TotalAlloc)
				b.StartTimer()
			}
			allocs := float64(b.N * n)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/allocs, "ns/alloc")
			b.ReportMetric(float64(total)/allocs, "B/alloc")
		})
	}
}

// BenchmarkHolders measures the owner lookup in a full /16.
func BenchmarkHolders(b *testing.B) {
	a := New()
	a.SetPools([]Pool{pool("big", "10.0.0.0/16")})
	for i := range 60000 {
		a.Allocate(Service{Key: fmt.Sprintf("ns/svc-%d", i)}, IPv4, "")
	}
	target := ip("10.0.200.17")
	b.ResetTimer()
	for range b.N {
		if len(a.Holders(target)) != 1 {
			b.Fatal("no holder")
		}
	}
}
