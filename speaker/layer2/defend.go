package layer2

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// DefaultDefendInterval is the shortest time between two defences of one
// address on one interface: while another host keeps claiming an address
// this node serves, the responder re-announces it at once, then at most
// once per interval (two ARP frames or one Neighbor Advertisement per
// defence), and once more after the last claim if that claim fell inside
// an interval. RFC 5227 section 2.4 (c) defends at most once per 10 s
// because it assumes the other host will notice and back off; a host that
// does not back off (a misconfigured server, an attacker, a second
// announcer) would keep the LAN's entries for 10 s, so this is much
// shorter, and still bounded: per interface at most 4 frames per second
// per claimed address for ARP, 2 for NDP.
const DefaultDefendInterval = 500 * time.Millisecond

// Conflict is another host claiming an address this node announces: a
// gratuitous ARP, an ARP reply or request sent from the address, or a
// Neighbor Advertisement (or a Neighbor Solicitation sent from the address)
// binding it to a MAC that is not the interface's.
type Conflict struct {
	// Addr is the claimed address.
	Addr netip.Addr
	// MAC is the claimant's hardware address: the one neighbours learn
	// from the frame (the ARP sender hardware address, the NA's target
	// link-layer address), not the Ethernet source.
	MAC net.HardwareAddr
	// Interface is where the claim was heard, and defended.
	Interface string
	// Defended is true when a defence went out at once; false when the
	// rate limit held it back, in which case one follows at the end of
	// the interval, and for claims that are not defended: by a peer, or
	// on a watched address.
	Defended bool
	// Peer is true when Options.Peer says the MAC is another speaker's.
	Peer bool
}

// defence is the part of Options a responder needs, and the MACs of every
// interface the Announcer manages.
type defence struct {
	interval   time.Duration
	onConflict func(Conflict)
	peer       func(net.HardwareAddr) bool
	// siblings points at the Announcer's set of managed MACs. On a node
	// with two interfaces on one LAN, each responder hears the other's
	// announcements; taking them for a foreign claim would make the two
	// defend against each other forever.
	siblings *atomic.Pointer[map[[macLen]byte]struct{}]
}

// sibling reports whether mac belongs to an interface of this node.
func (d defence) sibling(mac [macLen]byte) bool {
	if d.siblings == nil {
		return false
	}
	m := d.siblings.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[mac]
	return ok
}

// defendLoop owns the defence of every address on one interface: it
// reports each claim the read loops hand it and re-announces the address,
// rate-limited per address with a trailing edge, so that the last word on
// the wire is this node's within one interval of the last claim. It never
// stops announcing an address: deciding who owns an address is the
// election's job, and a single forged frame must not take a Service down.
func (r *responder) defendLoop() {
	type state struct {
		last time.Time // last defence sent
		due  bool      // a claim arrived since, inside the interval
	}
	states := map[netip.Addr]*state{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case c := <-r.claims:
			if r.defence.peer != nil && r.defence.peer(net.HardwareAddr(c.mac[:])) {
				r.log.V(1).Info("Another speaker claims an owned address; leaving it to the election", "ip", c.ip, "mac", net.HardwareAddr(c.mac[:]).String())
				if r.defence.onConflict != nil {
					r.defence.onConflict(Conflict{Addr: c.ip, MAC: net.HardwareAddr(c.mac[:]), Interface: r.ifi.Name, Peer: true})
				}
				break
			}
			now := time.Now()
			st := states[c.ip]
			if st == nil {
				st = &state{}
				states[c.ip] = st
			}
			defended := false
			if now.Sub(st.last) >= r.defence.interval {
				defended = r.defend(c.ip)
				st.last, st.due = now, false
			} else {
				st.due = true
			}
			r.log.V(1).Info("Another host claims an owned address", "ip", c.ip, "mac", net.HardwareAddr(c.mac[:]).String(), "defended", defended)
			if r.defence.onConflict != nil {
				r.defence.onConflict(Conflict{Addr: c.ip, MAC: net.HardwareAddr(c.mac[:]), Interface: r.ifi.Name, Defended: defended})
			}
		case <-timer.C:
		}

		now := time.Now()
		var next time.Time
		for ip, st := range states {
			at := st.last.Add(r.defence.interval)
			if st.due && !now.Before(at) {
				r.defend(ip)
				st.last, st.due = now, false
				at = now.Add(r.defence.interval)
			}
			if !st.due {
				if !now.Before(at) {
					delete(states, ip) // quiet for a whole interval
				}
				continue
			}
			if next.IsZero() || at.Before(next) {
				next = at
			}
		}
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(next))
		}
	}
}

// defend sends one announcement round for ip, if it is still owned here,
// and reports whether it did.
func (r *responder) defend(ip netip.Addr) bool {
	if !r.owned.Load().has(ip) {
		return false // lost since the claim: nothing left to defend
	}
	var (
		conn   net.PacketConn
		frames [][]byte
		c      *familyCounters
	)
	switch {
	case ip.Is4() && r.conns.ARP != nil:
		conn, frames, c = r.conns.ARP, gratuitousARP(r.ifi.HardwareAddr, ip), &r.stats.arp
	case ip.Is6() && r.conns.NDP != nil:
		conn, frames, c = r.conns.NDP, [][]byte{unsolicitedNA(r.ifi.HardwareAddr, ip)}, &r.stats.ndp
	default:
		return false
	}
	sent := false
	for _, f := range frames {
		if r.send(conn, f) {
			c.defences.Add(1)
			sent = true
		} else if r.ctx.Err() == nil {
			c.sendErrors.Add(1)
		}
	}
	return sent
}
