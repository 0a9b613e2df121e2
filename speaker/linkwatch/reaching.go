package linkwatch

import (
	"net"
	"slices"
)

// Reaching returns the names of the interfaces that hold addr, the
// address memberlist uses, or every name when none does (memberlist bound
// to an address on another interface). Only those links tell whether this
// node can still reach the others: on a Kubernetes node a CNI bridge such
// as cni0 keeps carrier while the node's cable is pulled, and counting it
// would keep a cut-off member running, whose "everyone else is dead"
// verdicts then reach the cluster when the cable returns.
func Reaching(ifis []net.Interface, addr string) []string {
	ip := net.ParseIP(addr)
	held := make(map[string][]net.IP, len(ifis))
	for _, ifi := range ifis {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				held[ifi.Name] = append(held[ifi.Name], ipn.IP)
			}
		}
	}
	return holders(ifis, held, ip)
}

// holders is Reaching's decision, apart from the system calls.
func holders(ifis []net.Interface, held map[string][]net.IP, ip net.IP) []string {
	// Never nil: Carrier reads nil as "every link".
	out, all := []string{}, []string{}
	for _, ifi := range ifis {
		all = append(all, ifi.Name)
		if ip != nil && slices.ContainsFunc(held[ifi.Name], ip.Equal) {
			out = append(out, ifi.Name)
		}
	}
	if len(out) == 0 {
		return all
	}
	return out
}
