package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// step is one Ledger call and what it must answer. Exactly one of load,
// ensure, hold, release or pause is set.
type step struct {
	load     []Pool
	snapshot []Assignment
	ensure   *Request
	hold     string // key of a Service whose request cannot be read
	release  string
	pause    bool

	// Checked after ensure and hold.
	addrs  []string
	err    error // errors.Is target; nil means success
	report bool
	taken  int
	freed  bool
	wait   bool
	pinned int // len(Result.Pinned)
	// Checked after load.
	misfits  int
	first    bool
	restored int // RestoreErrors
	retry    []string
	// Checked after release.
	released bool
}

func want(key string, fams ...Family) *Request {
	r := &Request{Service: Service{Key: key}, Families: fams, IPs: map[Family]netip.Addr{}}
	for range fams {
		r.Required = append(r.Required, true)
	}
	return r
}

func (r *Request) asking(ips ...string) *Request {
	for _, s := range ips {
		r.IPs[FamilyOf(ip(s))] = ip(s)
	}
	return r
}

func (r *Request) from(pool string) *Request { r.Pool = pool; return r }

func (r *Request) optional(i int) *Request { r.Required[i] = false; return r }

func (r *Request) sharing(key string, ports ...Port) *Request {
	r.Service.SharingKey, r.Service.Ports = key, ports
	return r
}

func (r *Request) local(sel string) *Request {
	r.Service.Local, r.Service.Selector = true, sel
	return r
}

func snap(key string, ips ...string) Assignment {
	a := Assignment{Service: Service{Key: key}}
	for _, s := range ips {
		a.Addrs = append(a.Addrs, ip(s))
	}
	return a
}

func restricted(p Pool, ns ...string) Pool { p.Namespaces = ns; return p }
func manual(p Pool) Pool                   { p.AutoAssign = false; return p }

var (
	v4  = pool("v4", "198.51.100.0/30")
	v6  = pool("v6", "2001:db8:100::/126")
	one = pool("one", "198.51.100.10/32")
)

// TestLedgerRules covers every rule the controller applied to a Service
// before the ledger took them over, one named case per rule.
func TestLedgerRules(t *testing.T) {
	tcp80, tcp443 := Port{"TCP", 80}, Port{"TCP", 443}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"no config yet: the Service waits, nothing is decided", []step{
			{ensure: want("ns/a", IPv4), wait: true},
		}},
		{"any address: the lowest free one of the auto-assign pools", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}, taken: 1},
		}},
		{"idempotent: a second call keeps the address and takes nothing", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}, taken: 1},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}},
		}},
		{"requested address", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4).asking("198.51.100.2"), addrs: []string{"198.51.100.2"}, taken: 1},
		}},
		{"changed request: the old address is freed", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4).asking("198.51.100.2"), addrs: []string{"198.51.100.2"}, taken: 1},
			{ensure: want("ns/a", IPv4).asking("198.51.100.3"), addrs: []string{"198.51.100.3"}, taken: 1, freed: true},
		}},
		{"requested address outside every pool", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4).asking("203.0.113.9"), err: ErrNotInPool, report: true},
		}},
		{"requested address in another pool than the one named", []step{
			{load: []Pool{v4, one}, first: true},
			{ensure: want("ns/a", IPv4).asking("198.51.100.1").from("one"), err: ErrWrongPool, report: true},
		}},
		{"named pool that does not exist", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4).from("nope"), err: ErrUnknownPool, report: true},
		}},
		{"named pool that is not auto-assign", []step{
			{load: []Pool{v4, manual(one)}, first: true},
			{ensure: want("ns/a", IPv4).from("one"), addrs: []string{"198.51.100.10"}, taken: 1},
		}},
		{"pool closed to the Service's namespace", []step{
			{load: []Pool{restricted(one, "team")}, first: true},
			{ensure: want("ns/a", IPv4).asking("198.51.100.10"), err: ErrNamespace, report: true},
			{ensure: want("team/a", IPv4).asking("198.51.100.10"), addrs: []string{"198.51.100.10"}, taken: 1},
		}},
		{"requested address in use by a Service that does not share", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}, taken: 1},
			{ensure: want("ns/b", IPv4).asking("198.51.100.0"), err: ErrInUse, report: true},
		}},
		{"sharing: same key, disjoint ports join the address", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4).sharing("k", tcp80), addrs: []string{"198.51.100.0"}, taken: 1},
			{ensure: want("ns/b", IPv4).sharing("k", tcp443), addrs: []string{"198.51.100.0"}, taken: 1},
		}},
		{"sharing: same key, same port is a sharing conflict", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4).sharing("k", tcp80), addrs: []string{"198.51.100.0"}, taken: 1},
			{ensure: want("ns/b", IPv4).sharing("k", tcp80).asking("198.51.100.0"), err: ErrSharing, report: true},
		}},
		{"sharing: traffic policies must agree", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4).sharing("k", tcp80), addrs: []string{"198.51.100.0"}, taken: 1},
			{ensure: want("ns/b", IPv4).sharing("k", tcp443).local("app=b").asking("198.51.100.0"), err: ErrSharing, report: true},
		}},
		{"exhausted pool; the Service waits and is served once an address is freed", []step{
			{load: []Pool{one}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.10"}, taken: 1},
			{ensure: want("ns/b", IPv4), err: ErrExhausted, report: true},
			{release: "ns/a", released: true},
			{ensure: want("ns/b", IPv4), addrs: []string{"198.51.100.10"}, taken: 1},
		}},
		{"a failure is reported once, and again only when it changes", []step{
			{load: []Pool{one}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.10"}, taken: 1},
			{ensure: want("ns/b", IPv4), err: ErrExhausted, report: true},
			{ensure: want("ns/b", IPv4), err: ErrExhausted},
			{ensure: want("ns/b", IPv4).asking("203.0.113.1"), err: ErrNotInPool, report: true},
		}},
		{"dual stack: one address per family, primary family first", []step{
			{load: []Pool{v4, v6}, first: true},
			{ensure: want("ns/a", IPv6, IPv4), addrs: []string{"2001:db8:100::", "198.51.100.0"}, taken: 2},
		}},
		{"RequireDualStack: a family that cannot be served refuses all and gives back what it took", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4, IPv6), err: ErrNoPool, report: true},
			// .0 went back: the next Service gets it.
			{ensure: want("ns/b", IPv4), addrs: []string{"198.51.100.0"}, taken: 1},
		}},
		{"RequireDualStack refused: addresses held before are kept", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}, taken: 1},
			{ensure: want("ns/a", IPv4, IPv6), addrs: []string{"198.51.100.0"}, err: ErrNoPool, report: true},
		}},
		{"PreferDualStack: the second family is optional", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4, IPv6).optional(1), addrs: []string{"198.51.100.0"}, taken: 1},
		}},
		{"a family no longer wanted is released", []step{
			{load: []Pool{v4, v6}, first: true},
			{ensure: want("ns/a", IPv4, IPv6), addrs: []string{"198.51.100.0", "2001:db8:100::"}, taken: 2},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}, freed: true},
		}},
		{"a family no longer wanted is kept while the new request is refused", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}, taken: 1},
			{ensure: want("ns/a", IPv6), addrs: []string{"198.51.100.0"}, err: ErrNoPool, report: true},
		}},
		{"unreadable request: the Service keeps what it holds and the reason is reported once", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}, taken: 1},
			{hold: "ns/a", addrs: []string{"198.51.100.0"}, err: errBadAnnotation, report: true},
			{hold: "ns/a", addrs: []string{"198.51.100.0"}, err: errBadAnnotation},
		}},
		{"restart: the snapshot is restored before anything is allocated", []step{
			{load: []Pool{v4}, snapshot: []Assignment{snap("ns/z", "198.51.100.0")}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.1"}, taken: 1},
			{ensure: want("ns/z", IPv4), addrs: []string{"198.51.100.0"}},
		}},
		{"restart: an address outside the config is pinned, kept and stands for its family", []step{
			{load: []Pool{v4}, snapshot: []Assignment{snap("ns/p", "203.0.113.5")}, first: true, restored: 1},
			{ensure: want("ns/p", IPv4), addrs: []string{"203.0.113.5"}, pinned: 1},
			{hold: "ns/p", addrs: []string{"203.0.113.5"}, err: errBadAnnotation, report: true, pinned: 1},
			{release: "ns/p"}, // pinned addresses never were in a pool
			{ensure: want("ns/p", IPv4), addrs: []string{"198.51.100.0"}, taken: 1},
		}},
		{"restart: a pinned address becomes an ordinary one once a config covers it", []step{
			{load: []Pool{one}, snapshot: []Assignment{snap("ns/p", "198.51.100.1")}, first: true, restored: 1},
			{ensure: want("ns/p", IPv4), addrs: []string{"198.51.100.1"}, pinned: 1},
			// Looked at again: it has nothing to report any more.
			{load: []Pool{v4}, retry: []string{"ns/p"}},
			{ensure: want("ns/p", IPv4), addrs: []string{"198.51.100.1"}},
			// Held in a pool now, so a config without it is refused.
			{load: []Pool{one}, misfits: 1},
		}},
		{"restart: two Services claim one address; the first key keeps it, the other gets a new one", []step{
			{load: []Pool{v4}, snapshot: []Assignment{snap("ns/b", "198.51.100.0"), snap("ns/a", "198.51.100.0")}, first: true, restored: 1},
			{ensure: want("ns/b", IPv4), addrs: []string{"198.51.100.1"}, taken: 1, freed: false},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}},
		}},
		{"new pools that would take an address are refused and change nothing", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}, taken: 1},
			{load: []Pool{one}, misfits: 1},
			{ensure: want("ns/b", IPv4), addrs: []string{"198.51.100.1"}, taken: 1},
			// Once the holders are gone, the same pools are taken.
			{release: "ns/a", released: true},
			{load: []Pool{one}, misfits: 1},
			{release: "ns/b", released: true},
			{load: []Pool{one}},
		}},
		{"new pools list the Services waiting for an address", []step{
			{load: []Pool{one}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.10"}, taken: 1},
			{ensure: want("ns/b", IPv4), err: ErrExhausted, report: true},
			{load: []Pool{pool("one", "198.51.100.10/31")}, retry: []string{"ns/b"}},
			{ensure: want("ns/b", IPv4), addrs: []string{"198.51.100.11"}, taken: 1},
		}},
		{"config gone: held addresses are kept, nothing new is given", []step{
			{load: []Pool{v4}, first: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}, taken: 1},
			{pause: true},
			{ensure: want("ns/a", IPv4), addrs: []string{"198.51.100.0"}},
			{ensure: want("ns/b", IPv4), err: ErrNoConfig, report: true},
			{load: []Pool{v4}, retry: []string{"ns/b"}},
			{ensure: want("ns/b", IPv4), addrs: []string{"198.51.100.1"}, taken: 1},
		}},
		{"config gone: a requested address is still confirmed", []step{
			{load: []Pool{v4}, first: true},
			{pause: true},
			{ensure: want("ns/a", IPv4).asking("198.51.100.3"), addrs: []string{"198.51.100.3"}, taken: 1},
		}},
		{"release of a Service that holds nothing frees nothing", []step{
			{load: []Pool{v4}, first: true},
			{release: "ns/ghost"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLedger()
			for i, st := range tc.steps {
				checkStep(t, l, i, st)
			}
		})
	}
}

var errBadAnnotation = errors.New("annotation ironlb.io/loadBalancerIPs: \"x\" is not an IP address")

func checkStep(t *testing.T, l *Ledger, i int, st step) {
	t.Helper()
	switch {
	case st.load != nil:
		got, err := l.Load(st.load, st.snapshot)
		if err != nil {
			t.Fatalf("step %d: Load: %v", i, err)
		}
		if len(got.Misfits) != st.misfits || got.First != st.first || len(got.RestoreErrors) != st.restored {
			t.Errorf("step %d: Load = %d misfits, first %v, %d restore errors (%v); want %d, %v, %d",
				i, len(got.Misfits), got.First, len(got.RestoreErrors), got.RestoreErrors, st.misfits, st.first, st.restored)
		}
		if st.retry != nil && !slices.Equal(got.Retry, st.retry) {
			t.Errorf("step %d: Load retries %v, want %v", i, got.Retry, st.retry)
		}
	case st.ensure != nil || st.hold != "":
		var got Result
		if st.ensure != nil {
			got = l.Ensure(*st.ensure)
		} else {
			got = l.Hold(st.hold, errBadAnnotation)
		}
		var addrs []string
		for _, a := range got.Addrs {
			addrs = append(addrs, a.String())
		}
		if diff := cmp.Diff(st.addrs, addrs); diff != "" {
			t.Errorf("step %d: addresses (-want +got):\n%s", i, diff)
		}
		switch {
		case st.err == nil && got.Err != nil:
			t.Errorf("step %d: refused: %v", i, got.Err)
		case st.err != nil && !errors.Is(got.Err, st.err):
			t.Errorf("step %d: error %v, want %v", i, got.Err, st.err)
		}
		if st.ensure != nil && got.Err != nil {
			var r *Refusal
			if !errors.As(got.Err, &r) {
				t.Errorf("step %d: error %T is not a *Refusal", i, got.Err)
			}
		}
		if got.Report != st.report || got.Taken != st.taken || got.Freed != st.freed || got.Wait != st.wait {
			t.Errorf("step %d: report %v taken %d freed %v wait %v; want %v %d %v %v", i, got.Report, got.Taken, got.Freed, got.Wait, st.report, st.taken, st.freed, st.wait)
		}
		key := st.hold
		if st.ensure != nil {
			key = st.ensure.Service.Key
		}
		if len(got.Pinned) != st.pinned {
			t.Errorf("step %d: pinned %v, want %d", i, got.Pinned, st.pinned)
		}
		for _, err := range got.Pinned {
			var re *RestoreError
			if !errors.As(err, &re) || re.Key != key {
				t.Errorf("step %d: pinned %v is not a *RestoreError of the Service", i, err)
			}
		}
		if waiting := slices.Contains(l.Waiting(), key); waiting != (got.Err != nil) {
			t.Errorf("step %d: Waiting() lists %s: %v, want %v", i, key, waiting, got.Err != nil)
		}
		if holds := l.Holds(key); holds != (len(got.Addrs) > 0) {
			t.Errorf("step %d: Holds(%s) = %v with addresses %v", i, key, holds, got.Addrs)
		}
	case st.release != "":
		if got := l.Release(st.release); got != st.released {
			t.Errorf("step %d: Release(%s) = %v, want %v", i, st.release, got, st.released)
		}
		if l.Holds(st.release) || slices.Contains(l.Waiting(), st.release) {
			t.Errorf("step %d: %s still held or waiting after Release", i, st.release)
		}
	case st.pause:
		l.Pause()
	}
}

// A refused request is atomic: the pools are exactly as before, whatever
// families it took on the way.
func TestLedgerRefusalLeavesPoolsAsTheyWere(t *testing.T) {
	l := NewLedger()
	if _, err := l.Load([]Pool{v4, pool("tiny6", "2001:db8:100::/128")}, nil); err != nil {
		t.Fatal(err)
	}
	if r := l.Ensure(*want("ns/x", IPv6)); r.Err != nil {
		t.Fatal(r.Err)
	}
	before := l.Stats()
	r := l.Ensure(*want("ns/a", IPv4, IPv6))
	if !errors.Is(r.Err, ErrExhausted) || r.Addrs != nil {
		t.Fatalf("Ensure = %v, %v; want an exhausted IPv6 refusal and no address", r.Addrs, r.Err)
	}
	if diff := cmp.Diff(before, l.Stats(), cmp.Comparer(func(a, b Stats) bool {
		return a.Pool == b.Pool && a.Family == b.Family && a.Used == b.Used && a.Total.Cmp(b.Total) == 0
	})); diff != "" {
		t.Errorf("pools changed by a refused request (-before +after):\n%s", diff)
	}
}

// The ledger is the controller's only lock around addresses: concurrent
// Services never get the same address.
func TestLedgerConcurrent(t *testing.T) {
	l := NewLedger()
	if _, err := l.Load([]Pool{pool("p", "198.51.100.0/24")}, nil); err != nil {
		t.Fatal(err)
	}
	got := make(chan netip.Addr, 256)
	done := make(chan struct{})
	for w := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 32 {
				r := l.Ensure(*want("ns/s"+string(rune('a'+w))+string(rune('a'+i%26))+string(rune('a'+i/26)), IPv4))
				if r.Err != nil {
					t.Error(r.Err)
					return
				}
				got <- r.Addrs[0]
			}
		}()
	}
	for range 8 {
		<-done
	}
	close(got)
	seen := map[netip.Addr]bool{}
	for a := range got {
		if seen[a] {
			t.Errorf("%s given twice", a)
		}
		seen[a] = true
	}
	if len(seen) != 256 {
		t.Errorf("%d addresses given, want 256", len(seen))
	}
}
