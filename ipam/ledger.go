package ipam

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"sync"
)

// Request is what a Service asks of the allocator, as read from its spec
// and annotations by the controller.
type Request struct {
	Service Service
	// Families wanted, the Service's primary family first.
	Families []Family
	// Required is false for PreferDualStack's second family: one that
	// cannot be served is not a failure.
	Required []bool
	// IPs requested per family; a family missing from the map means any
	// address.
	IPs map[Family]netip.Addr
	// Pool to draw from; empty means the auto-assign pools.
	Pool string
}

// Refusal says that a required family of a Service could not be served,
// and why (Err wraps one of the sentinel errors).
type Refusal struct {
	Family Family
	Err    error
}

func (r *Refusal) Error() string { return fmt.Sprintf("%s address: %v", r.Family, r.Err) }
func (r *Refusal) Unwrap() error { return r.Err }

// ErrNoConfig: the address-pool config is gone (Ledger.Pause), so a family
// the Service does not hold yet cannot be served.
var ErrNoConfig = errors.New("waiting for the address-pool ConfigMap")

// Result is the outcome of one Ledger call for one Service.
type Result struct {
	// Wait is true while no config was ever loaded: nothing was decided,
	// and Load's result lists every Service to look at again.
	Wait bool
	// Addrs are the addresses the Service holds now, pinned ones included,
	// in the order of its families (IPv4 first when it has none).
	Addrs []netip.Addr
	// Err is the refusal when the Service does not get what it asked for
	// (a *Refusal, or the reason given to Hold), else nil.
	Err error
	// Report is true when Err is new for this Service, so it is reported
	// once, not on every retry.
	Report bool
	// Taken counts addresses newly given to the Service.
	Taken int
	// Freed is true when addresses went back to the pools: Services
	// waiting for one (Waiting) may now be served.
	Freed bool
	// Pinned says why the Service keeps addresses that no pool covers:
	// the *RestoreError of each address pinned on restore and not placed
	// in a pool since, in address order. The addresses are in Addrs.
	Pinned []error
}

// Ledger owns the per-Service transaction over an Allocator: which
// addresses each Service holds, the addresses pinned outside the config,
// the Services waiting for an address, and whether the config is gone.
// Every decision about who gets which address is made here, and each call
// is atomic: a Service gets all its required families or keeps what it
// had.
//
// A Ledger is safe for concurrent use; each method holds its lock for the
// whole call.
type Ledger struct {
	mu     sync.Mutex
	alloc  *Allocator
	loaded bool // pools were loaded at least once
	paused bool // the config is gone: keep addresses, give none
	// pinned holds addresses a Service had on restore that the config did
	// not cover. They are kept as they are until a config covers them or
	// the Service lets them go; svc is its last known sharing data, used
	// to place them when a config covers them again.
	pinned map[string]pinned
	// failed holds the current refusal of each Service waiting for an
	// address.
	failed map[string]string
}

type pinned struct {
	svc   Service
	addrs []netip.Addr
	why   []error // the RestoreError of each of addrs
}

// NewLedger returns a Ledger without pools; every Service waits until
// Load is called.
func NewLedger() *Ledger {
	return &Ledger{alloc: New(), pinned: map[string]pinned{}, failed: map[string]string{}}
}

// Loaded is the outcome of Load.
type Loaded struct {
	// Misfits, when not empty, are the assignments the pools would not
	// allow; nothing changed.
	Misfits []Misfit
	// First is true when these are the first pools: the snapshot was
	// restored, and every Service should be looked at.
	First bool
	// RestoreErrors are the snapshot's addresses that could not be kept
	// (*RestoreError). One outside the pools is pinned; one in use by
	// another Service is not, and its Service gets a new address.
	RestoreErrors []error
	// Retry lists the Services to look at again: those waiting for an
	// address, and those whose pinned addresses the pools now cover.
	Retry []string
}

// Load replaces the pools. The first call restores snapshot (the
// addresses in the Services' status) in the same step, before any
// allocation, so a restart moves nothing; later calls ignore it and
// refuse pools that would take an address from a Service, changing
// nothing. A Service's pinned addresses that the new pools cover become
// ordinary assignments. Invalid pools return an ErrInvalid error.
func (l *Ledger) Load(pools []Pool, snapshot []Assignment) (Loaded, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	misfits, err := l.alloc.SetPools(pools)
	if err != nil || len(misfits) > 0 {
		return Loaded{Misfits: misfits}, err
	}
	var out Loaded
	l.paused = false
	if !l.loaded {
		l.loaded, out.First = true, true
		out.RestoreErrors = l.alloc.Restore(snapshot)
		svcs := map[string]Service{}
		for _, as := range snapshot {
			svcs[as.Service.Key] = as.Service
		}
		for _, err := range out.RestoreErrors {
			var re *RestoreError
			if errors.As(err, &re) && !errors.Is(err, ErrInUse) {
				p := l.pinned[re.Key]
				p.svc = svcs[re.Key]
				p.addrs = append(p.addrs, re.Addr)
				p.why = append(p.why, err)
				l.pinned[re.Key] = p
			}
		}
	} else {
		out.Retry = l.repin()
	}
	for k := range l.failed {
		out.Retry = append(out.Retry, k)
	}
	slices.Sort(out.Retry)
	// A pinned Service may also wait for its other family.
	out.Retry = slices.Compact(out.Retry)
	return out, nil
}

// repin places pinned addresses the pools now cover, and returns the
// Services that have such addresses: what they report changes.
func (l *Ledger) repin() (changed []string) {
	for key, p := range l.pinned {
		keep, why := p.addrs[:0], p.why[:0]
		for i, ip := range p.addrs {
			if l.alloc.Assign(p.svc, ip, "") != nil {
				keep, why = append(keep, ip), append(why, p.why[i])
			}
		}
		if len(keep) < len(p.addrs) {
			changed = append(changed, key)
		}
		if len(keep) == 0 {
			delete(l.pinned, key)
		} else {
			p.addrs, p.why = keep, why
			l.pinned[key] = p
		}
	}
	return changed
}

// Pause records that the config is gone: Services keep what they hold,
// and nothing new is given out until the next Load.
func (l *Ledger) Pause() {
	l.mu.Lock()
	l.paused = true
	l.mu.Unlock()
}

// Ensure is the whole transaction for one Service: it gives req one
// address per wanted family, keeping what the Service holds where it
// still fits. A required family that cannot be served refuses the whole
// request (Result.Err is a *Refusal) and gives back what this call took;
// a family the Service no longer wants is released only when the request
// succeeds. A pinned address stands for its family. While paused, only
// requested and already held addresses are confirmed.
func (l *Ledger) Ensure(req Request) Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.loaded {
		return Result{Wait: true}
	}
	key := req.Service.Key
	held := l.alloc.Addrs(key)
	pin, isPinned := l.pinned[key]
	if isPinned {
		pin.svc = req.Service
		l.pinned[key] = pin
	}
	var taken []netip.Addr
	var failure error
	for i, f := range req.Families {
		if slices.ContainsFunc(pin.addrs, func(ip netip.Addr) bool { return FamilyOf(ip) == f }) {
			continue
		}
		var ip netip.Addr
		var err error
		switch want, requested := req.IPs[f]; {
		case requested:
			ip, err = want, l.alloc.Assign(req.Service, want, req.Pool)
		case l.paused:
			if ip, err = heldIn(held, f); err == nil {
				err = l.alloc.Assign(req.Service, ip, "")
			}
		default:
			ip, err = l.alloc.Allocate(req.Service, f, req.Pool)
		}
		if err != nil {
			if i < len(req.Required) && req.Required[i] {
				failure = &Refusal{Family: f, Err: err}
				break
			}
			continue
		}
		if !slices.Contains(held, ip) {
			taken = append(taken, ip)
		}
	}
	if failure != nil {
		for _, ip := range taken {
			l.alloc.ReleaseAddr(key, ip)
		}
		taken = nil
	} else {
		for _, ip := range l.alloc.Addrs(key) {
			if !slices.Contains(req.Families, FamilyOf(ip)) {
				l.alloc.ReleaseAddr(key, ip)
			}
		}
	}
	now := l.alloc.Addrs(key)
	res := Result{Taken: len(taken), Err: failure}
	for _, ip := range held {
		if !slices.Contains(now, ip) {
			res.Freed = true
		}
	}
	res.Addrs = ordered(append(now, pin.addrs...), req.Families)
	res.Pinned = slices.Clone(pin.why)
	res.Report = l.record(key, failure)
	return res
}

// Hold keeps what a Service holds when its request cannot be read (a bad
// annotation must not cost it its address), and records why.
func (l *Ledger) Hold(key string, why error) Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	pin := l.pinned[key]
	addrs := append(l.alloc.Addrs(key), pin.addrs...)
	return Result{Addrs: ordered(addrs, nil), Err: why, Report: l.record(key, why), Pinned: slices.Clone(pin.why)}
}

// record keeps the Service's current failure and reports whether it is
// new.
func (l *Ledger) record(key string, failure error) bool {
	if failure == nil {
		delete(l.failed, key)
		return false
	}
	prev, had := l.failed[key]
	l.failed[key] = failure.Error()
	return !had || prev != failure.Error()
}

// Release lets go of everything the Service holds or waits for (it was
// deleted, or is no longer ironlb's) and reports whether addresses went
// back to the pools.
func (l *Ledger) Release(key string) (freed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	freed = len(l.alloc.Release(key)) > 0
	delete(l.failed, key)
	delete(l.pinned, key)
	return freed
}

// Holds reports whether the Service holds an address, pinned or not.
func (l *Ledger) Holds(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.alloc.Addrs(key)) > 0 || len(l.pinned[key].addrs) > 0
}

// Waiting lists the Services whose last request was refused, sorted.
func (l *Ledger) Waiting() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.failed))
	for k := range l.failed {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// PoolOf returns the name of the pool that contains ip.
func (l *Ledger) PoolOf(ip netip.Addr) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.alloc.PoolOf(ip)
}

// Stats returns the occupancy of every pool and family, as
// Allocator.Stats, safe to call while Services are served.
func (l *Ledger) Stats() []Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.alloc.Stats()
	for i := range st {
		st[i].Total = new(big.Int).Set(st[i].Total)
	}
	return st
}

func heldIn(held []netip.Addr, f Family) (netip.Addr, error) {
	for _, ip := range held {
		if FamilyOf(ip) == f {
			return ip, nil
		}
	}
	return netip.Addr{}, ErrNoConfig
}

// ordered sorts addrs by the order of fams, then IPv4 before IPv6.
func ordered(addrs []netip.Addr, fams []Family) []netip.Addr {
	rank := func(ip netip.Addr) int {
		if i := slices.Index(fams, FamilyOf(ip)); i >= 0 {
			return i
		}
		if ip.Is4() {
			return len(fams)
		}
		return len(fams) + 1
	}
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int { return rank(a) - rank(b) })
	if len(addrs) == 0 {
		return nil
	}
	return addrs
}
