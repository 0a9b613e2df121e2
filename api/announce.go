package api

import (
	"fmt"
	"net/netip"
	"strings"
)

// Announcement says who announces one address. Interface and MAC are empty
// when the writer does not know them (an address owned by another node).
type Announcement struct {
	IP        netip.Addr
	Node      string
	Interface string
	MAC       string
}

// FormatAnnouncements renders the message of a ConditionAnnounced condition
// with status True: one clause per address, separated by "; ", each
// "IP by NODE" optionally followed by " on IFACE" and " (MAC)". It is
// readable in kubectl and parsed back by ParseAnnouncements.
func FormatAnnouncements(as []Announcement) string {
	parts := make([]string, 0, len(as))
	for _, a := range as {
		s := a.IP.String() + " by " + a.Node
		if a.Interface != "" {
			s += " on " + a.Interface
		}
		if a.MAC != "" {
			s += " (" + a.MAC + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// ParseAnnouncements reads FormatAnnouncements' output back.
func ParseAnnouncements(msg string) ([]Announcement, error) {
	var out []Announcement
	if strings.TrimSpace(msg) == "" {
		return nil, nil
	}
	for _, part := range strings.Split(msg, "; ") {
		ipStr, rest, ok := strings.Cut(part, " by ")
		if !ok {
			return nil, fmt.Errorf("announcement %q: want \"IP by NODE [on IFACE] [(MAC)]\"", part)
		}
		ip, err := netip.ParseAddr(ipStr)
		if err != nil {
			return nil, fmt.Errorf("announcement %q: %w", part, err)
		}
		a := Announcement{IP: ip}
		if i := strings.LastIndex(rest, " ("); i >= 0 && strings.HasSuffix(rest, ")") {
			a.MAC = rest[i+2 : len(rest)-1]
			rest = rest[:i]
		}
		a.Node, a.Interface, _ = strings.Cut(rest, " on ")
		if a.Node == "" {
			return nil, fmt.Errorf("announcement %q: no node", part)
		}
		out = append(out, a)
	}
	return out, nil
}
