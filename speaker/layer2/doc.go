// Package layer2 answers ARP (IPv4) and NDP (IPv6) for the addresses this node
// owns, so that hosts on the LAN send traffic for a LoadBalancer IP to this
// node's MAC address.
//
// An [Announcer] runs one responder per network interface. The speaker tells
// it which addresses the node owns with [Announcer.SetOwned]; the responders
// answer ARP requests and Neighbor Solicitations for exactly those addresses,
// send a burst of gratuitous ARP / unsolicited Neighbor Advertisements when an
// address is gained, and go silent for an address the moment it is lost.
//
// They also listen for other hosts claiming an owned address (gratuitous
// ARP, ARP replies or requests sent from it, Neighbor Advertisements for
// it, from a MAC that is not the interface's). Each claim is reported
// through [Options.OnConflict] and the address is defended: re-announced at
// once, then at most once per [Options.DefendInterval] while the claims go
// on, and once more after the last one. A claim never makes a responder
// stop answering: that would let any host on the LAN take a Service down
// with one packet. Defences go out only on the interface the claim was
// heard on, which is one the address may be announced on. Claims by other
// speakers ([Options.Peer]) are only reported: the speaker's election
// decides who keeps the address, and answers through
// [Announcer.Reannounce]. The one claim that does silence an address is
// the one a handover waits for: an address the speaker hands over to
// another speaker ([Announcer.SetDraining]) is answered until that
// speaker's MAC claims it, and from that frame on no longer (drain.go).
//
// [Announcer.Check] and [Announcer.Probe] ask the LAN who holds an address
// (one ARP request or Neighbor Solicitation; RFC 5227 ARP probes or IPv6
// duplicate address detection) through the same sockets, on managed
// interfaces only, at most [Options.ProbeRate] question frames per second
// per interface.
//
// All I/O goes through [Conns], which [Dial] opens on a real interface and a
// test may replace with in-memory connections (see [Options.Dial]). The
// per-packet decisions are pure functions of the frame bytes, the
// interface's MAC and the owned set.
//
// The package imports no Kubernetes code: elections and informers live in
// the speaker, which only hands this package a set of addresses.
package layer2
