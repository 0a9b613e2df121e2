package speaker

import (
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/speaker/election"
)

// A handover moves an address between two live speakers: the owner
// comes back after a cut or a restart (failback), a node joins, or a
// Local Service's endpoint moves. It must cost no request, so it is
// make-before-break: the speaker that loses the address keeps answering
// for it (drains) until it hears the new owner announce it, and only then
// goes quiet. Going quiet as soon as the election moves the address,
// which is what a failover does, would leave a gap between the two: the
// new owner may not announce yet (its caches are still syncing after a
// restart, it has not merged its membership view back, or it waits for
// its service proxy), and its first gratuitous ARP may be lost or late,
// while clients whose entries still point at the old owner get no answer
// to their ARP re-checks. A failover has nobody to drain: the old owner
// is gone.
//
// Two nodes answering for one address during the drain is harmless: both
// forward to the Service, and the drain ends within milliseconds of the
// new owner's first announcement.

// drainSlack is added to Options.LocalServingWait to bound a drain: the
// new owner may hold the address back that long before it announces, and
// needs a moment after that. A new owner that never announces (it lost
// the address again, or cannot send) leaves the address dark after the
// bound, as a failover would; never for longer.
const drainSlack = 2 * time.Second

// drain is the losing side of a handover: this node keeps announcing ip
// until to, the new owner, is heard announcing it, or until until.
type drain struct {
	to    string
	until time.Time
	// heard: to was heard announcing; the next sync stops answering. Kept
	// until then, or that sync, which still finds the address among those
	// announced, would take it for a new handover and drain again.
	heard bool
}

// handover is a handover seen from either side: claims for ip by from
// (the speaker this node took it over from, which drains; or the new
// owner this node drained for) are part of the handover and not a
// duplicate announcer, until until.
type handover struct {
	from  string
	until time.Time
}

// peerClaim is the last claim by another speaker on an address this node
// announced: a drain towards that speaker that starts within drainSlack
// of it has nothing left to wait for (draining).
type peerClaim struct {
	node string
	at   time.Time
}

// drainBound is how long a drain lasts at most.
func (s *Speaker) drainBound() time.Duration {
	return s.opts.LocalServingWait + drainSlack
}

// draining decides, for the sync loop with s.mu held, whether this node
// keeps answering for ip although owner, another node, is now its elected
// owner, and until when. announcing says whether this node announced ip
// after the previous sync. A drain starts when the address leaves this
// node for a live speaker and lasts while that speaker stays the owner,
// alive, and unheard, within the bound. An address this node kept quiet
// (it lost a split brain, or waited) starts none.
func (s *Speaker) draining(ip netip.Addr, announcing bool, owner string, members []string, now time.Time) (bool, time.Time) {
	d, ok := s.drains[ip]
	if !ok && announcing && owner != "" && owner != s.opts.NodeName {
		if c, heard := s.peerClaims[ip]; heard && c.node == owner && now.Sub(c.at) < drainSlack {
			// The new owner announced before this node learned that it
			// lost the address (its membership view was a moment
			// behind): what the drain would wait for has happened, and
			// answering on would only draw back clients that moved.
			delete(s.peerClaims, ip)
			s.handovers[ip] = handover{from: owner, until: now.Add(drainSlack)}
			return false, time.Time{}
		}
		d, ok = drain{to: owner, until: now.Add(s.drainBound())}, true
	}
	if !ok || d.heard || d.to != owner || !slices.Contains(members, owner) || !now.Before(d.until) {
		delete(s.drains, ip)
		return false, time.Time{}
	}
	s.drains[ip] = d
	return true, d.until
}

// heardNewOwner is called by DuplicateAnnouncer, with s.mu held, when
// other announces ip. It reports whether that was expected as part of a
// handover, so neither side takes it for a duplicate announcer, and ends
// this node's drain when other is the new owner. It remembers the claim
// for a drain that has not started yet (draining).
func (s *Speaker) heardNewOwner(ip netip.Addr, other string, now time.Time) bool {
	if other == "" || other == s.opts.NodeName {
		return false
	}
	if s.peerClaims == nil {
		s.peerClaims = map[netip.Addr]peerClaim{}
	}
	s.peerClaims[ip] = peerClaim{node: other, at: now}
	if d, ok := s.drains[ip]; ok {
		if d.to == other && !d.heard {
			d.heard = true
			s.drains[ip] = d
			// The rest of the new owner's announcements may still be
			// heard before the announcer lets go of the address.
			s.handovers[ip] = handover{from: other, until: now.Add(drainSlack)}
			s.Kick()
		}
		// While draining, claims by any speaker are the election's
		// business: this node already knows it is not the owner.
		return true
	}
	if h, ok := s.handovers[ip]; ok && h.from == other && now.Before(h.until) {
		return true
	}
	return false
}

// returnHandover is the returning owner's side of a handover, for the
// sync loop with s.mu held: this node came back (Speaker.back) less than
// a drain bound ago and announces a, and its own records cannot say who
// had a meanwhile. The speaker that did may be draining a towards it; its
// claims are part of the handover for as long as the drain can last, not
// a duplicate announcer. Without this, every failback and every restart of
// an owner raised a DuplicateAnnouncer Warning and split-brain reminders
// against a speaker doing exactly what it should.
//
// Who that speaker is depends on how this node came back:
//   - It was isolated, and its record names itself (it kept its view from
//     before): the others elected the owner among the live candidates but
//     this node.
//   - It started, and has no record: the address may be new, in which
//     case nobody drains it. Only the Service's ironlb.io/Announced
//     condition (svcs) says who announced it meanwhile; that node, if it
//     is a live speaker, is expected.
//
// Only that one speaker is expected, only for an address there was when
// this node came back, and only within a drain bound of the return: a real
// duplicate by any other speaker, on a new address, or later, is still
// reported.
func (s *Speaker) returnHandover(a election.Address, svcs []*corev1.Service, nodes map[string]election.Node, members []string, now time.Time) {
	if _, was := s.announcing[a.IP]; was {
		return
	}
	if _, ok := s.handovers[a.IP]; ok {
		return
	}
	var from string
	switch prev, had := s.owners[a.IP]; {
	case had && prev != s.opts.NodeName:
		// The sync's owner loop knows who had it (a live one drains; a
		// dead one is a failover).
		return
	case had:
		others := slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == s.opts.NodeName })
		from = election.Owner(a.IP, election.Candidates(a, nodes, others))
	default:
		from = announcedBy(svcs, a.IP)
	}
	if from != "" && from != s.opts.NodeName && slices.Contains(members, from) {
		s.handovers[a.IP] = handover{from: from, until: now.Add(s.drainBound() + time.Second)}
	}
}

// announcedBy returns the node that svcs' ironlb.io/Announced condition
// names as the announcer of ip, "" if none does.
func announcedBy(svcs []*corev1.Service, ip netip.Addr) string {
	for _, svc := range svcs {
		c := currentCondition(svc)
		if c == nil || c.Status != metav1.ConditionTrue {
			continue
		}
		as, err := api.ParseAnnouncements(c.Message)
		if err != nil {
			continue
		}
		for _, an := range as {
			if an.IP == ip {
				return an.Node
			}
		}
	}
	return ""
}

// drainer is what an Announcer offers to end a drain on the packet path:
// the layer-2 Announcer stops answering for a draining address as soon as
// it decides a frame is the new owner's announcement, before it reads the
// next frame, instead of at the next sync after DuplicateAnnouncer heard
// it. A sync may be several milliseconds away, longer when one is under
// way, and a client that moved to the new owner and broadcasts a request
// meanwhile would take this node's answer and move back, losing the
// connections it opened through the new owner.
type drainer interface {
	// SetDraining names the announced addresses being handed over, each
	// with the new owner's MACs.
	SetDraining(drains map[netip.Addr][]net.HardwareAddr)
}

// drainTargets lists, for the announcer, the addresses this node drains
// with the MACs of their new owners; with s.mu held, after the sync
// decided announce. A drain heard since that decision stays listed while
// announce still holds its address: withdrawing it from the announcer
// first would have it answer again until the next sync. A new owner whose
// MACs are unknown is left out: its drain ends at a sync, as without a
// drainer.
func (s *Speaker) drainTargets(announce map[netip.Addr][]string) map[netip.Addr][]net.HardwareAddr {
	out := map[netip.Addr][]net.HardwareAddr{}
	for ip, d := range s.drains {
		if _, ok := announce[ip]; !ok {
			continue
		}
		if macs := s.opts.MACsOf(d.to); len(macs) > 0 {
			out[ip] = macs
		}
	}
	return out
}

func sameDrainTargets(a, b map[netip.Addr][]net.HardwareAddr) bool {
	return maps.EqualFunc(a, b, func(x, y []net.HardwareAddr) bool {
		return slices.EqualFunc(x, y, func(m, n net.HardwareAddr) bool { return m.String() == n.String() })
	})
}

// foreignClaim is the last claim on an address by a host that is not a
// speaker.
type foreignClaim struct {
	mac string
	at  time.Time
}
