package layer2

import (
	"bytes"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
)

// A node that hands an address over to another live speaker keeps
// answering for it (drains) until it hears the new owner announce it: a
// client whose entry still points here must get an answer to its
// re-checks until the new owner's announcement has moved it. Once that
// announcement has been heard, every further answer from here is a step
// back: a client that had already moved to the new owner, and broadcasts
// a request (a fresh connection, a cache re-check), would take this
// node's reply and move back, breaking the connections it opened through
// the new owner in between.
//
// The speaker learns of the announcement through OnConflict and
// withdraws the address at its next sync, which runs after a goroutine
// hand-off and a full recompute: milliseconds at best, more when a sync
// is already under way. So the responders end a drain themselves: the
// read loop that decides a frame is the new owner's claim on a draining
// address takes the address out of what every responder of the Announcer
// answers for, before it reads its next frame. A request that arrives
// after the announcement is never answered from here, whenever the
// speaker's sync runs.

// drainState is one address this node drains: answered until one of to,
// the new owner's MACs, is heard claiming it.
type drainState struct {
	to    [][macLen]byte // sorted, no duplicates
	heard atomic.Bool
}

func (d *drainState) isNewOwner(mac [macLen]byte) bool {
	_, ok := slices.BinarySearchFunc(d.to, mac, func(a, b [macLen]byte) int { return bytes.Compare(a[:], b[:]) })
	return ok
}

// drainSet maps each draining address to its state. It is immutable once
// published; the states in it are shared by every responder, and carried
// over to the next set while an address drains to the same MACs.
type drainSet map[netip.Addr]*drainState

// drainTable is what the responders of one Announcer share to end drains:
// the draining addresses, and the responders to silence when one of them
// hears a new owner.
type drainTable struct {
	set        atomic.Pointer[drainSet]
	responders atomic.Pointer[[]*responder]
}

func newDrainTable() *drainTable {
	t := &drainTable{}
	empty := drainSet{}
	t.set.Store(&empty)
	none := []*responder{}
	t.responders.Store(&none)
	return t
}

func (t *drainTable) load() drainSet {
	if t == nil {
		return nil
	}
	return *t.set.Load()
}

// SetDraining names the owned addresses (SetOwned) that this node is
// handing over to another speaker, each with the MACs that speaker
// announces from; it replaces the previous set. A draining address is
// answered as any owned one until a responder hears one of those MACs
// claim it (a gratuitous ARP, an ARP reply or request sent from it, an
// unsolicited Neighbor Advertisement for it). From the moment that frame
// is decided, no responder answers, announces, refreshes or defends the
// address any more, until SetOwned drops it. The claim is still reported
// through OnConflict (with Peer set when Options.Peer says so), which is
// how the caller learns that the handover is complete.
//
// Claims by any other MAC change nothing: a foreign host cannot end a
// drain, and is answered with a defence as for any owned address; only
// the speaker that was elected, whose MACs the caller knows, can.
//
// An address listed with no MAC cannot be heard and drains as any owned
// address. Listing an address that is not owned has no effect until it
// is. An address whose MACs stay the same keeps its state across calls;
// one listed with other MACs drains anew, answered until one of those is
// heard. One that is no longer listed is answered again if still owned,
// and announced as if just gained, since clients may have moved to the
// other node meanwhile: call SetOwned without the addresses whose drain
// ended before calling SetDraining without them.
func (a *Announcer) SetDraining(drains map[netip.Addr][]net.HardwareAddr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.ctx.Err() != nil {
		return
	}
	old := a.drains.load()
	next := make(drainSet, len(drains))
	for ip, macs := range drains {
		ip = ip.Unmap().WithZone("")
		var to [][macLen]byte
		for _, m := range macs {
			if isUnicastMAC(m) {
				to = append(to, [macLen]byte(m))
			}
		}
		if len(to) == 0 {
			continue
		}
		slices.SortFunc(to, func(x, y [macLen]byte) int { return bytes.Compare(x[:], y[:]) })
		to = slices.Compact(to)
		if st, ok := old[ip]; ok && slices.Equal(st.to, to) {
			next[ip] = st
			continue
		}
		next[ip] = &drainState{to: to}
	}
	if maps.Equal(old, next) {
		return
	}
	a.drains.set.Store(&next)
	for _, r := range a.responders {
		r.republish()
	}
}

// handedOver is called by a read loop for every claim it decided: when
// cl is the new owner's claim on an address this node drains, the drain
// ends here and now on every responder of the Announcer.
func (r *responder) handedOver(cl claim) {
	st, ok := r.drains.load()[cl.ip]
	if !ok || !st.isNewOwner(cl.mac) || !st.heard.CompareAndSwap(false, true) {
		return
	}
	for _, rr := range *r.drains.responders.Load() {
		rr.quiet(cl.ip, st)
	}
	r.log.V(1).Info("Heard the new owner announce a draining address; no longer answering for it",
		"ip", cl.ip, "mac", net.HardwareAddr(cl.mac[:]).String())
}

// quiet takes ip out of what r answers for, unless its drain ended or
// changed since st was heard (SetDraining then decides).
func (r *responder) quiet(ip netip.Addr, st *drainState) {
	r.omu.Lock()
	defer r.omu.Unlock()
	if r.drains.load()[ip] != st {
		return
	}
	cur := *r.owned.Load()
	if !cur.has(ip) {
		return
	}
	next := maps.Clone(cur)
	delete(next, ip)
	r.owned.Store(&next)
}

// publishLocked makes r answer for set, less the addresses handed over
// (heard drains). With r.omu held, so that it never undoes a quiet that
// ran concurrently: whichever of the two locks first, the heard flag was
// set before quiet locks, and publishLocked reads it under the lock.
func (r *responder) publishLocked(set addrSet) {
	var gone []netip.Addr
	for ip, st := range r.drains.load() {
		if st.heard.Load() && set.has(ip) {
			gone = append(gone, ip)
		}
	}
	if len(gone) > 0 {
		set = maps.Clone(set)
		for _, ip := range gone {
			delete(set, ip)
		}
	}
	r.owned.Store(&set)
}

// republish applies a new drain set to r's announced addresses; called
// by SetDraining with the Announcer's mutex held. An address answered
// again after its drain had gone quiet is announced, as if gained, when
// it no longer drains at all (the election gave it back); one that now
// drains to other MACs is only answered, since it is still not ours.
func (r *responder) republish() {
	r.omu.Lock()
	before := *r.owned.Load()
	r.publishLocked(r.announced)
	after := *r.owned.Load()
	drains := r.drains.load()
	r.omu.Unlock()
	for a := range after {
		if _, draining := drains[a]; !before.has(a) && !draining {
			if cancel, ok := r.bursts[a]; ok {
				cancel()
			}
			r.log.V(1).Info("Answering again for an address whose drain ended", "ip", a)
			r.announce(a)
		}
	}
}
