// Package ipam owns address pools and hands their addresses to Services.
//
// It is pure: no Kubernetes types, no clock, no logging, no I/O. The
// controller feeds it Services and pools and turns its errors into Events.
package ipam

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"
)

// Family is an IP address family.
type Family uint8

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", uint8(f))
}

// FamilyOf returns the family of a; IPv4-mapped IPv6 addresses count as
// IPv6 because that is how they travel on the wire.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// Range is a contiguous, inclusive span of addresses of one family.
type Range struct {
	First, Last netip.Addr
}

// ParseRange parses one entry of a pool's addresses: a CIDR
// ("192.168.1.0/24", "2001:db8::/120") or a range of two addresses of the
// same family ("192.168.1.10-192.168.1.20"). A single address is written
// "a-a", "a/32" or "a/128". As in MetalLB, host bits of a CIDR are ignored.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Range{}, fmt.Errorf("empty address range; write a CIDR like 192.168.1.0/24 or a range like 192.168.1.10-192.168.1.20")
	}
	if from, to, ok := strings.Cut(s, "-"); ok {
		first, err := parseAddr(strings.TrimSpace(from))
		if err != nil {
			return Range{}, fmt.Errorf("invalid start of range %q: %v", s, err)
		}
		last, err := parseAddr(strings.TrimSpace(to))
		if err != nil {
			return Range{}, fmt.Errorf("invalid end of range %q: %v", s, err)
		}
		if first.Is4() != last.Is4() {
			return Range{}, fmt.Errorf("range %q mixes IPv4 and IPv6; both ends must be of the same family", s)
		}
		if last.Less(first) {
			return Range{}, fmt.Errorf("range %q starts after it ends; write it as %s-%s", s, last, first)
		}
		if spansMapped(first, last) {
			return Range{}, fmt.Errorf("range %q includes the IPv4-mapped IPv6 addresses %s, which cannot be announced; split it around them", s, mappedBlock)
		}
		return Range{First: first, Last: last}, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("invalid CIDR %q: %v", s, unquote(err))
		}
		if p.Addr().Zone() != "" {
			return Range{}, fmt.Errorf("invalid CIDR %q: an address pool cannot have an IPv6 zone", s)
		}
		if p.Addr().Is4In6() {
			return Range{}, fmt.Errorf("invalid CIDR %q: IPv4-mapped IPv6 addresses are not supported; write the IPv4 CIDR", s)
		}
		p = p.Masked()
		if spansMapped(p.Addr(), lastOf(p)) {
			return Range{}, fmt.Errorf("invalid CIDR %q: it includes the IPv4-mapped IPv6 addresses %s, which cannot be announced; use a longer prefix that leaves them out", s, mappedBlock)
		}
		return Range{First: p.Addr(), Last: lastOf(p)}, nil
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return Range{}, fmt.Errorf("%q is a single address without a prefix length; write it as %s/%d or %s-%s", s, s, bits(s), s, s)
	}
	return Range{}, fmt.Errorf("invalid address range %q; write a CIDR like 192.168.1.0/24 or a range like 192.168.1.10-192.168.1.20", s)
}

// mappedBlock is ::ffff:0:0/96, where IPv6 spells IPv4 addresses: never
// on the wire as IPv6, so never a Service's address.
var mappedBlock = netip.MustParsePrefix("::ffff:0:0/96")

// spansMapped reports whether the range first-last includes any address
// of mappedBlock.
func spansMapped(first, last netip.Addr) bool {
	if !first.Is6() {
		return false
	}
	lo, hi := mappedBlock.Addr(), lastOf(mappedBlock)
	return !last.Less(lo) && !hi.Less(first)
}

func bits(s string) int {
	if strings.Contains(s, ":") {
		return 128
	}
	return 32
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, unquote(err)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q has an IPv6 zone, which an address pool cannot have", s)
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address; write the IPv4 address", s)
	}
	return a, nil
}

// unquote drops netip's own quoting of the input, which the caller already
// names, so errors read once instead of repeating the value.
func unquote(err error) error {
	msg := err.Error()
	if i := strings.LastIndex(msg, "): "); i >= 0 && strings.HasPrefix(msg, "netip.Parse") {
		return fmt.Errorf("%s", msg[i+3:])
	}
	return err
}

// lastOf returns the highest address of a masked prefix.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	start := 0
	if p.Addr().Is4() {
		start = 12
	}
	for i := start*8 + p.Bits(); i < 128; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		return a.Unmap()
	}
	return a
}

// Family returns the range's address family.
func (r Range) Family() Family { return FamilyOf(r.First) }

// Contains reports whether a lies in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is4() == r.First.Is4() && !a.Less(r.First) && !r.Last.Less(a)
}

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool {
	return r.First.Is4() == o.First.Is4() && !r.Last.Less(o.First) && !o.Last.Less(r.First)
}

// Size is the number of addresses in r. It is a big.Int because an IPv6
// range can hold more than 2^64 addresses.
func (r Range) Size() *big.Int {
	n := new(big.Int).Sub(toInt(r.Last), toInt(r.First))
	return n.Add(n, big.NewInt(1))
}

// String prints r the way a user would write it.
func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

func toInt(a netip.Addr) *big.Int {
	b := a.AsSlice()
	return new(big.Int).SetBytes(b)
}

// buggy reports whether a is an IPv4 address ending in .0 or .255, which
// some old firmware refuses as a unicast address.
func buggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	last := a.As4()[3]
	return last == 0 || last == 255
}

// buggyCount is the number of addresses in r for which buggy is true.
func buggyCount(r Range) *big.Int {
	if !r.First.Is4() {
		return new(big.Int)
	}
	f, l := int64(u32(r.First)), int64(u32(r.Last))
	return big.NewInt(countMod(f, l, 0) + countMod(f, l, 255))
}

// countMod counts the x in [f, l] with x%256 == rem.
func countMod(f, l, rem int64) int64 {
	return floorDiv(l-rem, 256) - floorDiv(f-1-rem, 256)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
