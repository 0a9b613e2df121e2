package ipam

import (
	"cmp"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Service is what the allocator needs to know about a Service.
type Service struct {
	// Key is "namespace/name".
	Key string
	// SharingKey lets Services share an address; empty means never.
	SharingKey string
	// Ports the Service exposes; they only matter when sharing.
	Ports []Port
	// Local is true for externalTrafficPolicy: Local.
	Local bool
	// Selector is the Service's pod selector in a canonical form. Two
	// Local Services may only share an address when they select the same
	// pods, because the address follows their endpoints.
	Selector string
}

// Namespace returns the namespace part of the key.
func (s *Service) Namespace() string {
	ns, _, _ := strings.Cut(s.Key, "/")
	return ns
}

// Port is a protocol and port number, like TCP/80.
type Port struct {
	Protocol string
	Port     int32
}

func (p Port) String() string { return p.Protocol + "/" + strconv.Itoa(int(p.Port)) }

// Allocator hands out addresses from pools to Services.
//
// It is not safe for concurrent use: the controller owns one and calls it
// from a single goroutine or under its own lock. Every method either
// succeeds or leaves the state as it was.
type Allocator struct {
	pools   map[string]*poolState
	ordered []*poolState // by name: the order auto-assign pools are tried in
	spans   []span

	// pages holds, for every address in use, the Services holding it, in
	// pages of 256 consecutive addresses. Lookups are O(1) and memory grows
	// with the pages touched rather than with one map entry per address.
	pages map[netip.Addr]*page
	svcs  map[string]*holder
	// shared lists, per sharing key, the addresses held under that key, so
	// a new Service with the key can join one of them.
	shared map[string][]netip.Addr
}

type page struct {
	n    int
	slot [256]*holder // head of the chain of Services sharing each address
}

// holder is one Service and the addresses it holds.
type holder struct {
	key   string
	addrs [2]netip.Addr // by family index; the zero Addr when none
	// share is nil for a Service without a sharing key, which cannot share
	// and so needs neither its ports nor chain links.
	share *share
}

type share struct {
	key      string
	ports    []Port
	local    bool
	selector string
	next     [2]*holder // next Service on the same address, per family
}

// New returns an allocator without pools.
func New() *Allocator {
	return &Allocator{
		pools:  map[string]*poolState{},
		pages:  map[netip.Addr]*page{},
		svcs:   map[string]*holder{},
		shared: map[string][]netip.Addr{},
	}
}

func fi(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func famIndex(f Family) int {
	if f == IPv4 {
		return 0
	}
	return 1
}

// pageOf returns the key of a's page and a's slot in it.
func pageOf(a netip.Addr) (netip.Addr, uint8) {
	if a.Is4() {
		b := a.As4()
		slot := b[3]
		b[3] = 0
		return netip.AddrFrom4(b), slot
	}
	b := a.As16()
	slot := b[15]
	b[15] = 0
	return netip.AddrFrom16(b), slot
}

// head returns the first holder of a, or nil when a is free.
func (a *Allocator) head(ip netip.Addr) *holder {
	k, i := pageOf(ip)
	if p := a.pages[k]; p != nil {
		return p.slot[i]
	}
	return nil
}

func (a *Allocator) used(ip netip.Addr) bool { return a.head(ip) != nil }

// Holders returns the keys of the Services holding ip, in O(1) plus the
// number of Services sharing it.
func (a *Allocator) Holders(ip netip.Addr) []string {
	var keys []string
	f := fi(ip)
	for h := a.head(ip); h != nil; h = h.nextAt(f) {
		keys = append(keys, h.key)
	}
	return keys
}

func (h *holder) nextAt(f int) *holder {
	if h.share == nil {
		return nil
	}
	return h.share.next[f]
}

// Addrs returns the addresses held by the Service with key, IPv4 first.
func (a *Allocator) Addrs(key string) []netip.Addr {
	h := a.svcs[key]
	if h == nil {
		return nil
	}
	var out []netip.Addr
	for _, ip := range h.addrs {
		if ip.IsValid() {
			out = append(out, ip)
		}
	}
	return out
}

// PoolOf returns the name of the pool that contains ip.
func (a *Allocator) PoolOf(ip netip.Addr) (string, bool) {
	if ps := poolIn(a.spans, ip); ps != nil {
		return ps.Name, true
	}
	return "", false
}

// Pools returns the current pools, by name.
func (a *Allocator) Pools() []Pool {
	out := make([]Pool, len(a.ordered))
	for i, ps := range a.ordered {
		out[i] = ps.Pool
	}
	return out
}

// Stats is the occupancy of one family of one pool.
type Stats struct {
	Pool   string
	Family Family
	Total  *big.Int
	Used   int
}

// Stats returns the occupancy of every pool and family that has addresses.
func (a *Allocator) Stats() []Stats {
	var out []Stats
	for _, ps := range a.ordered {
		for i, f := range []Family{IPv4, IPv6} {
			if len(ps.fam[i].ranges) > 0 {
				out = append(out, Stats{Pool: ps.Name, Family: f, Total: ps.fam[i].total, Used: ps.fam[i].used})
			}
		}
	}
	return out
}

// Assign gives ip to svc. When pool is not empty, ip must be in that pool.
// A Service holds at most one address per family: assigning a second one
// replaces the first. Assigning an address the Service already holds
// updates its sharing data after checking it against the other holders.
func (a *Allocator) Assign(svc Service, ip netip.Addr, pool string) error {
	if err := validService(&svc); err != nil {
		return err
	}
	if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
		return newErr(ErrInvalid, "invalid address %q for %s", ip, svc.Key)
	}
	ps, err := a.eligible(&svc, ip, pool)
	if err != nil {
		return err
	}
	if err := a.checkAt(&svc, ip); err != nil {
		return err
	}
	if err := a.checkOthers(&svc, fi(ip)); err != nil {
		return err
	}
	a.commit(&svc, ip, ps)
	return nil
}

// Allocate gives svc a free address of family f, from pool when it is not
// empty, else from the auto-assign pools in name order. A Service with a
// sharing key first joins an address already held under that key, when it
// can. A Service that already holds an address of family f in an
// acceptable pool keeps it.
func (a *Allocator) Allocate(svc Service, f Family, pool string) (netip.Addr, error) {
	if err := validService(&svc); err != nil {
		return netip.Addr{}, err
	}
	if f != IPv4 && f != IPv6 {
		return netip.Addr{}, newErr(ErrInvalid, "invalid family %v for %s", f, svc.Key)
	}
	i := famIndex(f)
	if h := a.svcs[svc.Key]; h != nil && h.addrs[i].IsValid() {
		cur := h.addrs[i]
		if ps := poolIn(a.spans, cur); ps != nil && (pool == "" || ps.Name == pool) {
			if err := a.Assign(svc, cur, pool); err != nil {
				return netip.Addr{}, err
			}
			return cur, nil
		}
	}
	cands, err := a.candidates(&svc, f, pool)
	if err != nil {
		return netip.Addr{}, err
	}
	if err := a.checkOthers(&svc, i); err != nil {
		return netip.Addr{}, err
	}
	if svc.SharingKey != "" {
		for _, ip := range a.shared[svc.SharingKey] {
			if fi(ip) != i {
				continue
			}
			ps := poolIn(a.spans, ip)
			if ps == nil || !slices.Contains(cands, ps) {
				continue
			}
			if a.checkAt(&svc, ip) == nil {
				a.commit(&svc, ip, ps)
				return ip, nil
			}
		}
	}
	for _, ps := range cands {
		if ip, ok := ps.fam[i].take(ps.AvoidBuggyIPs, a.used); ok {
			a.commit(&svc, ip, ps)
			return ip, nil
		}
	}
	names := make([]string, len(cands))
	for j, ps := range cands {
		names[j] = strconv.Quote(ps.Name)
	}
	return netip.Addr{}, newErr(ErrExhausted, "no free %s address left in pool %s; free an address or add addresses to the pool", f, strings.Join(names, ", "))
}

// candidates returns the pools svc may draw a family-f address from.
func (a *Allocator) candidates(svc *Service, f Family, pool string) ([]*poolState, error) {
	i := famIndex(f)
	ns := svc.Namespace()
	if pool != "" {
		ps := a.pools[pool]
		switch {
		case ps == nil:
			return nil, newErr(ErrUnknownPool, "address pool %q does not exist; use the name of a pool in the config", pool)
		case len(ps.fam[i].ranges) == 0:
			return nil, newErr(ErrNoPool, "address pool %q has no %s addresses", pool, f)
		case !ps.Allows(ns):
			return nil, newErr(ErrNamespace, "address pool %q does not allow namespace %q (it is limited to %s)", pool, ns, strings.Join(ps.Namespaces, ", "))
		}
		return []*poolState{ps}, nil
	}
	var cands, restricted []*poolState
	for _, ps := range a.ordered {
		if !ps.AutoAssign || len(ps.fam[i].ranges) == 0 {
			continue
		}
		if ps.Allows(ns) {
			cands = append(cands, ps)
		} else {
			restricted = append(restricted, ps)
		}
	}
	if len(cands) > 0 {
		return cands, nil
	}
	if len(restricted) > 0 {
		var desc []string
		for _, ps := range restricted {
			desc = append(desc, fmt.Sprintf("%q is limited to %s", ps.Name, strings.Join(ps.Namespaces, ", ")))
		}
		return nil, newErr(ErrNamespace, "no auto-assign pool with %s addresses allows namespace %q (%s)", f, ns, strings.Join(desc, "; "))
	}
	return nil, newErr(ErrNoPool, "no auto-assign pool has %s addresses; add one to the config or name a pool", f)
}

// eligible checks that svc may hold ip at all and returns ip's pool.
func (a *Allocator) eligible(svc *Service, ip netip.Addr, pool string) (*poolState, error) {
	ps := poolIn(a.spans, ip)
	switch {
	case ps == nil:
		return nil, newErr(ErrNotInPool, "address %s is not in any address pool; request an address from a pool in the config", ip)
	case pool != "" && ps.Name != pool:
		if a.pools[pool] == nil {
			return nil, newErr(ErrUnknownPool, "address pool %q does not exist; use the name of a pool in the config", pool)
		}
		return nil, newErr(ErrWrongPool, "address %s is in pool %q, not in the requested pool %q", ip, ps.Name, pool)
	case !ps.Allows(svc.Namespace()):
		return nil, newErr(ErrNamespace, "address %s is in pool %q, which does not allow namespace %q (it is limited to %s)", ip, ps.Name, svc.Namespace(), strings.Join(ps.Namespaces, ", "))
	case ps.AvoidBuggyIPs && buggy(ip):
		return nil, newErr(ErrReserved, "address %s ends in .0 or .255, which pool %q withholds (avoid-buggy-ips)", ip, ps.Name)
	}
	return ps, nil
}

// checkAt checks that svc may join the Services already holding ip.
func (a *Allocator) checkAt(svc *Service, ip netip.Addr) error {
	f := fi(ip)
	for h := a.head(ip); h != nil; h = h.nextAt(f) {
		if h.key == svc.Key {
			continue
		}
		if reason, sharing := conflict(svc, h); reason != "" {
			return &InUseError{Addr: ip, Holder: h.key, Reason: reason, Sharing: sharing}
		}
	}
	return nil
}

// checkOthers checks the addresses svc holds in families other than skip
// against svc's possibly changed sharing data.
func (a *Allocator) checkOthers(svc *Service, skip int) error {
	h := a.svcs[svc.Key]
	if h == nil {
		return nil
	}
	for i, ip := range h.addrs {
		if i == skip || !ip.IsValid() {
			continue
		}
		if err := a.checkAt(svc, ip); err != nil {
			return err
		}
	}
	return nil
}

// conflict says why svc cannot share with h, or "" when it can.
func conflict(svc *Service, h *holder) (reason string, sharing bool) {
	switch {
	case h.share == nil:
		return "it does not allow sharing (it has no sharing key)", false
	case svc.SharingKey == "":
		return "this Service does not allow sharing (it has no sharing key)", false
	case svc.SharingKey != h.share.key:
		return fmt.Sprintf("its sharing key %q differs from this Service's %q", h.share.key, svc.SharingKey), false
	}
	for _, p := range svc.Ports {
		if slices.Contains(h.share.ports, p) {
			return fmt.Sprintf("both use port %s", p), true
		}
	}
	switch {
	case svc.Local != h.share.local:
		mine, theirs := policy(svc.Local), policy(h.share.local)
		return fmt.Sprintf("it uses externalTrafficPolicy %s and this Service uses %s; they must agree", theirs, mine), true
	case svc.Local && svc.Selector != h.share.selector:
		return "both use externalTrafficPolicy Local but select different pods; they must have the same selector", true
	}
	return "", false
}

func policy(local bool) string {
	if local {
		return "Local"
	}
	return "Cluster"
}

func validService(svc *Service) error {
	ns, name, ok := strings.Cut(svc.Key, "/")
	if !ok || ns == "" || name == "" {
		return newErr(ErrInvalid, "invalid Service key %q; want namespace/name", svc.Key)
	}
	return nil
}

// commit records that svc holds ip, replacing its address of ip's family.
// The caller has checked everything; commit cannot fail.
func (a *Allocator) commit(svc *Service, ip netip.Addr, ps *poolState) {
	h := a.svcs[svc.Key]
	if h == nil {
		h = &holder{key: svc.Key}
		a.svcs[svc.Key] = h
	}
	f := fi(ip)
	if h.addrs[f] == ip {
		a.setShare(h, svc)
		return
	}
	// Leave the replaced address first: its chain links live in the old
	// sharing data, which setShare may drop.
	if h.addrs[f].IsValid() {
		a.unplace(h, f)
	}
	a.setShare(h, svc)
	h.addrs[f] = ip
	k, slot := pageOf(ip)
	p := a.pages[k]
	if p == nil {
		p = &page{}
		a.pages[k] = p
	}
	if old := p.slot[slot]; old != nil {
		// Only Services that passed conflict() share, so both have a share.
		h.share.next[f] = old
	} else {
		p.n++
		ps.fam[f].used++
		if h.share != nil {
			a.shared[h.share.key] = append(a.shared[h.share.key], ip)
		}
	}
	p.slot[slot] = h
}

// setShare brings h's sharing data up to date with svc. The caller has
// checked the change against every co-holder, so a Service that loses its
// sharing key holds its addresses alone and has no chain links to keep.
func (a *Allocator) setShare(h *holder, svc *Service) {
	if svc.SharingKey == "" {
		if h.share != nil {
			a.unshareAll(h)
			h.share = nil
		}
		return
	}
	if h.share == nil {
		h.share = &share{}
	} else if h.share.key != svc.SharingKey {
		a.unshareAll(h)
	}
	oldKey := h.share.key
	h.share.key = svc.SharingKey
	h.share.ports = append(h.share.ports[:0], svc.Ports...)
	h.share.local = svc.Local
	h.share.selector = svc.Selector
	if oldKey != svc.SharingKey {
		for _, ip := range h.addrs {
			if ip.IsValid() {
				a.shared[svc.SharingKey] = append(a.shared[svc.SharingKey], ip)
			}
		}
	}
}

// unshareAll drops h's addresses from the sharing index of its old key.
func (a *Allocator) unshareAll(h *holder) {
	for _, ip := range h.addrs {
		if ip.IsValid() {
			a.unshare(h.share.key, ip)
		}
	}
}

func (a *Allocator) unshare(key string, ip netip.Addr) {
	list := slices.DeleteFunc(a.shared[key], func(x netip.Addr) bool { return x == ip })
	if len(list) == 0 {
		delete(a.shared, key)
	} else {
		a.shared[key] = list
	}
}

// unplace removes h from its address of family index f.
func (a *Allocator) unplace(h *holder, f int) {
	ip := h.addrs[f]
	h.addrs[f] = netip.Addr{}
	k, slot := pageOf(ip)
	p := a.pages[k]
	if p.slot[slot] == h {
		p.slot[slot] = h.nextAt(f)
	} else {
		for prev := p.slot[slot]; prev != nil; prev = prev.nextAt(f) {
			if prev.share.next[f] == h {
				prev.share.next[f] = h.share.next[f]
				break
			}
		}
	}
	if h.share != nil {
		h.share.next[f] = nil
	}
	if p.slot[slot] != nil {
		return
	}
	if h.share != nil {
		a.unshare(h.share.key, ip)
	}
	if p.n--; p.n == 0 {
		delete(a.pages, k)
	}
	if ps := poolIn(a.spans, ip); ps != nil {
		ps.fam[f].used--
		ps.fam[f].freedAt(ip)
	}
}

// Release frees every address held by the Service with key and returns
// them. Releasing an unknown key does nothing.
func (a *Allocator) Release(key string) []netip.Addr {
	h := a.svcs[key]
	if h == nil {
		return nil
	}
	var out []netip.Addr
	for f, ip := range h.addrs {
		if ip.IsValid() {
			out = append(out, ip)
			a.unplace(h, f)
		}
	}
	delete(a.svcs, key)
	return out
}

// ReleaseAddr frees ip if the Service with key holds it, keeping the
// Service's other addresses.
func (a *Allocator) ReleaseAddr(key string, ip netip.Addr) {
	h := a.svcs[key]
	if h == nil || !ip.IsValid() || h.addrs[fi(ip)] != ip {
		return
	}
	a.unplace(h, fi(ip))
	if !h.addrs[0].IsValid() && !h.addrs[1].IsValid() {
		delete(a.svcs, key)
	}
}

// Assignment is a Service and the addresses it holds, as found in its
// status.
type Assignment struct {
	Service Service
	Addrs   []netip.Addr
}

// RestoreError is an address that could not be restored.
type RestoreError struct {
	Key  string
	Addr netip.Addr
	Err  error
}

func (e *RestoreError) Error() string {
	return fmt.Sprintf("cannot keep address %s of %s: %v", e.Addr, e.Key, e.Err)
}

func (e *RestoreError) Unwrap() error { return e.Err }

// Restore records a snapshot of existing assignments in one pass, before
// any new allocation, so a restart changes no address. The result does not
// depend on the order of the snapshot: where two Services claim the same
// address and cannot share it, the one whose key sorts first keeps it.
// Addresses that cannot be kept are returned as *RestoreError, in key
// order; everything else is restored.
func (a *Allocator) Restore(snapshot []Assignment) []error {
	sorted := slices.Clone(snapshot)
	slices.SortStableFunc(sorted, func(x, y Assignment) int { return cmp.Compare(x.Service.Key, y.Service.Key) })
	var errs []error
	for _, as := range sorted {
		var seen [2]bool
		for _, ip := range as.Addrs {
			if ip.IsValid() && seen[fi(ip)] {
				errs = append(errs, &RestoreError{as.Service.Key, ip, newErr(ErrInvalid, "the Service already has a %s address", FamilyOf(ip))})
				continue
			}
			if err := a.Assign(as.Service, ip, ""); err != nil {
				errs = append(errs, &RestoreError{as.Service.Key, ip, err})
				continue
			}
			seen[fi(ip)] = true
		}
	}
	return errs
}

// Misfit is a current assignment that a new set of pools would not allow.
type Misfit struct {
	Key    string
	Addr   netip.Addr
	Reason string
}

func (m Misfit) String() string { return fmt.Sprintf("%s holds %s, which %s", m.Key, m.Addr, m.Reason) }

// SetPools replaces the pools. If any current assignment would not fit the
// new pools, nothing changes and the misfits are returned, so the caller
// can refuse the config; otherwise the pools are replaced and every
// Service keeps its addresses. Invalid pools return an ErrInvalid error.
func (a *Allocator) SetPools(pools []Pool) ([]Misfit, error) {
	byName, ordered, spans, err := buildPools(pools)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(a.svcs))
	for k := range a.svcs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var misfits []Misfit
	for _, k := range keys {
		h := a.svcs[k]
		svc := Service{Key: k}
		for _, ip := range h.addrs {
			if !ip.IsValid() {
				continue
			}
			ps := poolIn(spans, ip)
			switch {
			case ps == nil:
				misfits = append(misfits, Misfit{k, ip, "is not in any pool of the new config"})
			case !ps.Allows(svc.Namespace()):
				misfits = append(misfits, Misfit{k, ip, fmt.Sprintf("is in pool %q, which the new config closes to namespace %q", ps.Name, svc.Namespace())})
			case ps.AvoidBuggyIPs && buggy(ip):
				misfits = append(misfits, Misfit{k, ip, fmt.Sprintf("ends in .0 or .255, which pool %q would withhold (avoid-buggy-ips)", ps.Name)})
			}
		}
	}
	if len(misfits) > 0 {
		return misfits, nil
	}
	a.pools, a.ordered, a.spans = byName, ordered, spans
	// The new cursors start at the beginning and step over addresses in
	// use, so only the counters need rebuilding.
	for _, h := range a.svcs {
		for f, ip := range h.addrs {
			if ip.IsValid() && a.head(ip) == h {
				poolIn(spans, ip).fam[f].used++
			}
		}
	}
	return nil, nil
}
