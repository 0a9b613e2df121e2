// Package election picks, for every address, the one node that announces
// it. It is pure and coordination-free: every speaker computes the same
// owners from the same inputs, so no messages are exchanged to agree.
package election

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"slices"
)

// Node is what the election needs to know about a node.
type Node struct {
	Name string
	// Ready is the node's Ready condition.
	Ready bool
	// NetworkUnavailable is the node's NetworkUnavailable condition.
	NetworkUnavailable bool
	// Excluded is true when the node carries the label
	// node.kubernetes.io/exclude-from-external-load-balancers.
	Excluded bool
	Labels   map[string]string
}

// Service is one Service using an address.
type Service struct {
	Key string
	// Local is externalTrafficPolicy: Local; then only nodes with a ready
	// endpoint of the Service may announce, or traffic would be dropped.
	Local bool
	// EndpointNodes are the nodes with a ready endpoint; read only when
	// Local is set.
	EndpointNodes []string
}

// Address is one address to elect an owner for, with the Services that
// share it.
type Address struct {
	IP       netip.Addr
	Services []Service
	// NodeAllowed applies the pool's node selectors; nil allows every node.
	NodeAllowed func(labels map[string]string) bool
}

// Candidates returns the names of the nodes that may announce a: live
// members that are Ready, have a network, are not excluded, match the
// pool's selectors and, for every Local Service on a, host a ready
// endpoint. The result is sorted.
func Candidates(a Address, nodes map[string]Node, live []string) []string {
	var out []string
	for _, name := range live {
		n, ok := nodes[name]
		if !ok || !n.Ready || n.NetworkUnavailable || n.Excluded {
			continue
		}
		if a.NodeAllowed != nil && !a.NodeAllowed(n.Labels) {
			continue
		}
		eligible := true
		for _, s := range a.Services {
			if s.Local && !slices.Contains(s.EndpointNodes, name) {
				eligible = false
				break
			}
		}
		if eligible {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Owner returns the candidate with the smallest hash(node + "#" + ip), or
// "" when there is none. Hashing each (node, address) pair spreads
// addresses evenly over nodes, and when a node leaves only its own
// addresses move: everyone else's minimum is unchanged.
func Owner(ip netip.Addr, candidates []string) string {
	best, bestH := "", uint64(0)
	for _, c := range candidates {
		h := Hash(c, ip)
		if best == "" || h < bestH || (h == bestH && c < best) {
			best, bestH = c, h
		}
	}
	return best
}

// Hash is the election's ranking of node for ip; lower wins. It is
// SHA-256 of node + "#" + ip.String(), built in a stack buffer: at 250
// nodes and 10,000 addresses a full election hashes 2.5 million pairs, and
// the string concatenation was half of that cost. Every speaker version
// must hash the same bytes, or a rolling upgrade would elect two owners.
func Hash(node string, ip netip.Addr) uint64 {
	var buf [320]byte
	b := append(buf[:0], node...)
	b = append(b, '#')
	if ip.IsValid() {
		b = ip.AppendTo(b)
	} else {
		b = append(b, ip.String()...)
	}
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// Elect returns the owner of every address that has one.
func Elect(addrs []Address, nodes []Node, live []string) map[netip.Addr]string {
	byName := make(map[string]Node, len(nodes))
	for _, n := range nodes {
		byName[n.Name] = n
	}
	owners := make(map[netip.Addr]string, len(addrs))
	for _, a := range addrs {
		if o := Owner(a.IP, Candidates(a, byName, live)); o != "" {
			owners[a.IP] = o
		}
	}
	return owners
}
