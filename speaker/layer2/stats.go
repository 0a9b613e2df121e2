package layer2

import "sync/atomic"

// FamilyStats counts what the responders did for one address family since
// the Announcer was created. Counters only grow, so they map directly onto
// Prometheus counters in the speaker.
type FamilyStats struct {
	// Requests is the number of well-formed ARP requests or Neighbor
	// Solicitations received, answered or not, apart from those counted
	// in Conflicts.
	Requests uint64
	// Replies is the number of ARP replies or solicited Neighbor
	// Advertisements sent.
	Replies uint64
	// Gratuitous is the number of announcement frames sent when an address
	// was gained (two per round for ARP, one for NDP).
	Gratuitous uint64
	// Refreshes is the number of announcement frames sent again for
	// addresses already owned (Options.Refresh).
	Refreshes uint64
	// Malformed is the number of frames dropped because they were not valid
	// ARP or NDP.
	Malformed uint64
	// Ignored is the number of valid frames that asked nothing of a
	// responder: replies, other ICMPv6 types, the node's own transmissions.
	Ignored uint64
	// SendErrors is the number of replies or announcements the socket
	// refused to send.
	SendErrors uint64
	// Conflicts is the number of frames in which another MAC claimed an
	// owned address (see Conflict).
	Conflicts uint64
	// Defences is the number of announcement frames sent to reclaim an
	// address from such a claim (two per round for ARP, one for NDP).
	Defences uint64
	// Probes is the number of question frames Check and Probe sent.
	Probes uint64
}

// Stats is a snapshot of the counters of every responder an Announcer has
// run, including responders since closed.
type Stats struct {
	ARP FamilyStats
	NDP FamilyStats
}

// familyCounters is the live, lock-free form of FamilyStats. Every
// responder of an Announcer shares one set, so that closing a responder never
// makes a counter go backwards.
type familyCounters struct {
	requests, replies, gratuitous, refreshes, malformed, ignored, sendErrors, conflicts, defences, probes atomic.Uint64
}

func (c *familyCounters) snapshot() FamilyStats {
	return FamilyStats{
		Requests:   c.requests.Load(),
		Replies:    c.replies.Load(),
		Gratuitous: c.gratuitous.Load(),
		Refreshes:  c.refreshes.Load(),
		Malformed:  c.malformed.Load(),
		Ignored:    c.ignored.Load(),
		SendErrors: c.sendErrors.Load(),
		Conflicts:  c.conflicts.Load(),
		Defences:   c.defences.Load(),
		Probes:     c.probes.Load(),
	}
}

// count records the verdict on one inbound frame.
func (c *familyCounters) count(v verdict) {
	switch v {
	case verdictMalformed:
		c.malformed.Add(1)
	case verdictIgnored:
		c.ignored.Add(1)
	case verdictRequest, verdictAnswer:
		c.requests.Add(1)
	case verdictConflict:
		c.conflicts.Add(1)
	}
}

type counters struct {
	arp, ndp familyCounters
}
