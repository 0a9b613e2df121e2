package layer2

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/time/rate"
)

// readErrorBackoff is how long a read loop waits after an unexpected socket
// error (for example ENETDOWN while the link flaps) before reading again, so
// that a persistent error cannot spin a core.
const readErrorBackoff = 100 * time.Millisecond

// claimQueue is how many claims a responder's read loops may hand to its
// defence goroutine before further ones are dropped (still counted in
// Stats). The defence is rate-limited per address anyway, so under a flood
// the dropped claims change nothing on the wire.
const claimQueue = 64

// responder answers ARP and NDP on one interface.
//
// The read loops only load owned (an atomic pointer to an immutable set);
// update, announce and stop are called by the Announcer with its mutex held,
// which also guards bursts and groups.
type responder struct {
	ifi      net.Interface
	conns    Conns
	log      logr.Logger
	stats    *counters
	schedule []time.Duration
	defence  defence
	// refresh: see Options.Refresh; <= 0 is off. Set before start.
	refresh time.Duration
	// ownedChanged wakes refreshLoop when update changed the owned set
	// or SetRefresh the intervals.
	ownedChanged chan struct{}
	// refreshFor holds per-address refresh intervals that override
	// refresh (a pool's refresh-interval); <= 0 is off for that address.
	refreshFor atomic.Pointer[map[netip.Addr]time.Duration]
	// broken is set when a socket stopped working underneath a running
	// responder: it no longer answers on that interface.
	broken atomic.Bool
	// deaf drops every frame read, as a socket that silently stopped
	// delivering would: the failure only the other speakers' self-checks
	// can see. Set only by a test build's hook (testhooks.go).
	deaf atomic.Bool
	// sources caches the interface's addresses for Check (sourcesOf).
	sources atomic.Pointer[sources]

	// claims carries conflicts from the read loops to defendLoop.
	claims chan claim

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// owned is what the read loops answer for: the announced addresses,
	// less those handed over to a new owner that was heard (drain.go).
	// Written under omu only, by update, SetDraining and a read loop that
	// hears a new owner.
	owned atomic.Pointer[addrSet]
	omu   sync.Mutex
	// announced is the set last given to update; guarded by the
	// Announcer's mutex.
	announced addrSet
	// drains is shared by the Announcer's responders; set before start,
	// nil in tests that build a bare responder.
	drains *drainTable
	// watched are addresses not announced here whose claimants are still
	// reported (Announcer.SetWatched); never nil once started.
	watched atomic.Pointer[addrSet]

	// listeners are the checks and probes under way (see probe.go): an
	// immutable slice replaced under lmu, loaded once per frame.
	listeners atomic.Pointer[[]*listener]
	lmu       sync.Mutex
	// limiter bounds the question frames Check and Probe send here; set
	// before start.
	limiter *rate.Limiter

	bursts map[netip.Addr]context.CancelFunc
	groups map[netip.Addr]int // solicited-node group -> owned addresses in it
}

func newResponder(parent context.Context, ifi net.Interface, conns Conns, log logr.Logger, stats *counters, schedule []time.Duration, def defence) *responder {
	ctx, cancel := context.WithCancel(parent)
	r := &responder{
		ifi:          ifi,
		conns:        conns,
		log:          log.WithValues("interface", ifi.Name),
		stats:        stats,
		schedule:     schedule,
		defence:      def,
		claims:       make(chan claim, claimQueue),
		ownedChanged: make(chan struct{}, 1),
		ctx:          ctx,
		cancel:       cancel,
		bursts:       map[netip.Addr]context.CancelFunc{},
		groups:       map[netip.Addr]int{},
	}
	empty := addrSet{}
	r.owned.Store(&empty)
	r.watched.Store(&empty)
	return r
}

// start launches the goroutines; they all end when r.ctx ends.
func (r *responder) start() {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		<-r.ctx.Done()
		// Closing the sockets is what unblocks the read loops; closing the
		// ICMPv6 socket also leaves every multicast group it joined.
		if err := r.conns.Close(); err != nil {
			r.log.Error(err, "Closing sockets")
		}
	}()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.defendLoop()
	}()
	// Always: a pool may turn refreshing on for its addresses when the
	// default is off. With nothing to refresh it sleeps.
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.refreshLoop()
	}()
	if r.conns.ARP != nil {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.readLoop(r.conns.ARP, decideARP, &r.stats.arp)
		}()
	}
	if r.conns.NDP != nil {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.readLoop(r.conns.NDP, decideNDP, &r.stats.ndp)
		}()
	}
}

// stop ends every goroutine of r and waits for them, so that the sockets are
// closed when it returns.
func (r *responder) stop() {
	r.cancel()
	r.wg.Wait()
}

func (r *responder) readLoop(conn net.PacketConn, decide func([]byte, net.HardwareAddr, addrSet) (verdict, []byte, claim), c *familyCounters) {
	buf := make([]byte, maxFrameLength)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				r.log.Info("Socket closed underneath the responder; no longer answering on it until it is opened again")
				r.broken.Store(true)
				return
			}
			r.log.Error(err, "Reading frame")
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(readErrorBackoff): // collected once fired (Go 1.23+)
			}
			continue
		}
		if r.deaf.Load() {
			continue
		}
		v, reply, cl := decide(buf[:n], r.ifi.HardwareAddr, *r.owned.Load())
		if w := *r.watched.Load(); len(w) > 0 && v != verdictConflict && v != verdictAnswer && v != verdictMalformed {
			// Decided again only while something is watched, which is
			// rare; the reply such a decision may build is never sent.
			if v2, _, cl2 := decide(buf[:n], r.ifi.HardwareAddr, w); v2 == verdictConflict {
				v, cl = v2, cl2
			}
		}
		if v == verdictConflict && r.defence.sibling(cl.mac) {
			v = verdictIgnored // another interface of this node announcing
		}
		if v == verdictConflict && r.drains != nil {
			// Before the next frame is read: a request that follows the
			// new owner's announcement must find the address gone.
			r.handedOver(cl)
		}
		c.count(v)
		if ls := r.listeners.Load(); ls != nil && len(*ls) > 0 {
			r.hear(buf[:n], *ls)
		}
		switch v {
		case verdictAnswer:
			if r.send(conn, reply) {
				c.replies.Add(1)
			} else {
				c.sendErrors.Add(1)
			}
		case verdictConflict:
			// Handed off so that reporting and the defence's timers never
			// delay the replies this loop sends.
			select {
			case r.claims <- cl:
			default:
			}
		}
	}
}

// send writes one frame; the destination MAC is the frame's own, which is
// what an AF_PACKET socket wants as its address.
func (r *responder) send(conn net.PacketConn, frame []byte) bool {
	if len(frame) < ethHeaderLen {
		return false
	}
	if _, err := conn.WriteTo(frame, &packet.Addr{HardwareAddr: net.HardwareAddr(frame[0:6])}); err != nil {
		r.log.V(2).Info("Sending frame failed", "err", err)
		return false
	}
	return true
}

// update replaces the owned set. New IPv6 addresses join their
// solicited-node group before the set is published, so that the first
// multicast solicitation after SetOwned already reaches the socket; lost
// addresses are unpublished first and only then have their bursts cancelled
// and groups left, so no reply goes out for them after update returns
// (except one already decided on by a read loop).
func (r *responder) update(set addrSet) error {
	old := r.announced
	var errs []error
	if r.conns.NDP != nil && r.conns.Groups != nil {
		for a := range set {
			if a.Is6() && !old.has(a) {
				if err := r.join(a); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	r.announced = set
	r.omu.Lock()
	r.publishLocked(set)
	r.omu.Unlock()
	select {
	case r.ownedChanged <- struct{}{}:
	default:
	}
	for a := range old {
		if set.has(a) {
			continue
		}
		if cancel, ok := r.bursts[a]; ok {
			cancel()
			delete(r.bursts, a)
		}
		if a.Is6() && r.conns.NDP != nil && r.conns.Groups != nil {
			if err := r.leave(a); err != nil {
				errs = append(errs, err)
			}
		}
		r.log.V(1).Info("Stopped announcing", "ip", a)
	}
	for a := range set {
		if !old.has(a) {
			r.log.V(1).Info("Announcing", "ip", a)
			r.announce(a)
		}
	}
	return errors.Join(errs...)
}

// join takes a reference on a's solicited-node group; several addresses
// that share their low 24 bits share one group, and joining a group twice on
// one socket fails.
func (r *responder) join(a netip.Addr) error {
	g, err := ndp.SolicitedNodeMulticast(a)
	if err != nil {
		return err
	}
	if r.groups[g] == 0 {
		if err := r.conns.Groups.JoinGroup(g); err != nil {
			return fmt.Errorf("joining %s for %s on %s: %w", g, a, r.ifi.Name, err)
		}
	}
	r.groups[g]++
	return nil
}

func (r *responder) leave(a netip.Addr) error {
	g, err := ndp.SolicitedNodeMulticast(a)
	if err != nil {
		return err
	}
	switch r.groups[g] {
	case 0:
		return nil // the join had failed; nothing to leave
	case 1:
		delete(r.groups, g)
		if err := r.conns.Groups.LeaveGroup(g); err != nil {
			return fmt.Errorf("leaving %s for %s on %s: %w", g, a, r.ifi.Name, err)
		}
	default:
		r.groups[g]--
	}
	return nil
}

// announce starts the gratuitous burst for a newly owned address. The burst
// is repeated on r.schedule because a single announcement can be lost, and a
// neighbour may still be resolving the previous owner when the first one
// arrives; it runs in its own goroutine under a context that update cancels
// when the address is lost.
func (r *responder) announce(a netip.Addr) {
	var (
		conn   net.PacketConn
		frames [][]byte
		c      *familyCounters
	)
	if a.Is4() && r.conns.ARP != nil {
		conn, frames, c = r.conns.ARP, gratuitousARP(r.ifi.HardwareAddr, a), &r.stats.arp
	} else if a.Is6() && r.conns.NDP != nil {
		conn, frames, c = r.conns.NDP, [][]byte{unsolicitedNA(r.ifi.HardwareAddr, a)}, &r.stats.ndp
	}
	if conn == nil || len(r.schedule) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	r.bursts[a] = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer cancel()
		start := time.Now()
		var timer *time.Timer
		defer func() {
			if timer != nil {
				timer.Stop()
			}
		}()
		for _, at := range r.schedule {
			if d := time.Until(start.Add(at)); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			}
			for _, f := range frames {
				// Checked per frame: once the address is lost, not even the
				// rest of the current round may go out. Nor once it is
				// handed over (drain.go), which happens on the packet path
				// without cancelling ctx.
				if ctx.Err() != nil || !r.owned.Load().has(a) {
					return
				}
				if r.send(conn, f) {
					c.gratuitous.Add(1)
				} else if ctx.Err() == nil {
					// A write that lost the race with stop is not an error.
					c.sendErrors.Add(1)
				}
			}
		}
	}()
}

// refreshBatch is how far ahead refreshLoop looks when it wakes (for
// intervals of 10 s and more): every address due within it goes out in the
// same batch, so that many addresses cost at most one wakeup per second
// per interface.
const refreshBatch = time.Second

// refreshLoop announces every owned address again about every r.refresh
// (see Options.Refresh). Each address keeps its own clock, started with a
// random phase when the address is gained, so that the frames of many
// addresses spread over the interval instead of leaving in one burst. With
// nothing owned it sleeps until update wakes it.
func (r *responder) refreshLoop() {
	due := map[netip.Addr]time.Time{}
	every := map[netip.Addr]time.Duration{} // the interval due was set for
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		now := time.Now()
		set := *r.owned.Load()
		var overrides map[netip.Addr]time.Duration
		if p := r.refreshFor.Load(); p != nil {
			overrides = *p
		}
		interval := func(a netip.Addr) time.Duration {
			if d, ok := overrides[a]; ok {
				return d
			}
			return r.refresh
		}
		for a := range due {
			if !set.has(a) || interval(a) != every[a] {
				delete(due, a)
				delete(every, a)
			}
		}
		for a := range set {
			if _, ok := due[a]; ok {
				continue
			}
			if d := interval(a); d > 0 {
				// The initial burst covers the start; the first refresh
				// comes one jittered interval later.
				due[a], every[a] = now.Add(lastOffset(r.schedule)).Add(jitter(d)), d
			}
		}
		var next time.Time
		for a, at := range due {
			// Batching may advance a refresh by at most a tenth of the
			// interval.
			if at.Before(now.Add(min(refreshBatch, every[a]/10))) {
				r.refreshOne(a)
				at = now.Add(jitter(every[a]))
				due[a] = at
			}
			if next.IsZero() || at.Before(next) {
				next = at
			}
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-r.ctx.Done():
			return
		case <-r.ownedChanged:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// refreshOne sends one gratuitous round for a, unless a was lost meanwhile.
func (r *responder) refreshOne(a netip.Addr) {
	if !r.owned.Load().has(a) || r.ctx.Err() != nil {
		return
	}
	var (
		conn   net.PacketConn
		frames [][]byte
		c      *familyCounters
	)
	switch {
	case a.Is4() && r.conns.ARP != nil:
		conn, frames, c = r.conns.ARP, gratuitousARP(r.ifi.HardwareAddr, a), &r.stats.arp
	case a.Is6() && r.conns.NDP != nil:
		conn, frames, c = r.conns.NDP, [][]byte{unsolicitedNA(r.ifi.HardwareAddr, a)}, &r.stats.ndp
	default:
		return
	}
	for _, f := range frames {
		if r.send(conn, f) {
			c.refreshes.Add(1)
		} else if r.ctx.Err() == nil {
			c.sendErrors.Add(1)
		}
	}
}

func lastOffset(schedule []time.Duration) time.Duration {
	if len(schedule) == 0 {
		return 0
	}
	return slices.Max(schedule)
}

// jitter spreads d by ±10 %.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}
