package ipam

import (
	"math/big"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		in          string
		first, last string
		size        string
	}{
		{"192.168.56.100-192.168.56.110", "192.168.56.100", "192.168.56.110", "11"},
		{" 10.0.0.1 - 10.0.0.1 ", "10.0.0.1", "10.0.0.1", "1"},
		{"10.0.0.0/28", "10.0.0.0", "10.0.0.15", "16"},
		{"10.0.0.5/32", "10.0.0.5", "10.0.0.5", "1"},
		{"10.0.0.7/24", "10.0.0.0", "10.0.0.255", "256"}, // host bits ignored, as MetalLB does
		{"0.0.0.0/0", "0.0.0.0", "255.255.255.255", "4294967296"},
		{"2001:db8::/120", "2001:db8::", "2001:db8::ff", "256"},
		{"2001:db8::1/128", "2001:db8::1", "2001:db8::1", "1"},
		{"2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", "18446744073709551616"},
		{"2001:db8::10-2001:db8::1f", "2001:db8::10", "2001:db8::1f", "16"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRange(tt.in)
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tt.in, err)
			}
			if r.First != netip.MustParseAddr(tt.first) || r.Last != netip.MustParseAddr(tt.last) {
				t.Errorf("ParseRange(%q) = %s-%s, want %s-%s", tt.in, r.First, r.Last, tt.first, tt.last)
			}
			if got := r.Size().String(); got != tt.size {
				t.Errorf("Size() = %s, want %s", got, tt.size)
			}
		})
	}
}

func TestParseRangeErrors(t *testing.T) {
	tests := []struct {
		in   string
		want []string // substrings of the error
	}{
		{"", []string{"empty address range"}},
		{"10.0.0.1", []string{`"10.0.0.1"`, "10.0.0.1/32", "10.0.0.1-10.0.0.1"}},
		{"2001:db8::1", []string{"2001:db8::1/128"}},
		{"10.0.0.300/24", []string{`"10.0.0.300/24"`}},
		{"10.0.0.0/33", []string{`"10.0.0.0/33"`}},
		{"10.0.0.9-10.0.0.1", []string{`"10.0.0.9-10.0.0.1"`, "starts after it ends", "10.0.0.1-10.0.0.9"}},
		{"10.0.0.1-2001:db8::1", []string{"mixes IPv4 and IPv6"}},
		{"10.0.0.1-", []string{"invalid end", `"10.0.0.1-"`}},
		{"-10.0.0.1", []string{"invalid start"}},
		{"10.0.0.1-10.0.0.2-10.0.0.3", []string{"invalid end"}},
		{"fe80::1%eth0-fe80::2%eth0", []string{"zone"}},
		{"fe80::%eth0/64", []string{"zone"}},
		{"::ffff:10.0.0.1-::ffff:10.0.0.2", []string{"IPv4-mapped"}},
		{"::ffff:10.0.0.0/120", []string{"IPv4-mapped"}},
		// Ends that are not mapped, around the mapped block (found by
		// FuzzParseRange: "::0/80" printed back as "::-::ffff:255.255.255.255").
		{"::/80", []string{`"::/80"`, "::ffff:0.0.0.0/96", "longer prefix"}},
		{"::1-::1:0:0:0", []string{`"::1-::1:0:0:0"`, "::ffff:0.0.0.0/96", "split it"}},
		{"banana", []string{`"banana"`, "CIDR like"}},
		{"adresses", []string{`"adresses"`}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseRange(tt.in)
			if err == nil {
				t.Fatalf("ParseRange(%q) succeeded, want an error", tt.in)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParseRange(%q) error %q does not mention %q", tt.in, err, w)
				}
			}
		})
	}
}

func TestBuggyCount(t *testing.T) {
	for _, s := range []string{"10.0.0.0/24", "10.0.0.0/16", "10.0.0.1-10.0.0.254", "10.0.0.255-10.0.1.0", "0.0.0.0-0.0.0.10", "255.255.255.0/24", "10.0.0.250-10.0.3.5"} {
		r, err := ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		var want int64
		for a := r.First; ; a = a.Next() {
			if buggy(a) {
				want++
			}
			if a == r.Last {
				break
			}
		}
		if got := buggyCount(r); got.Cmp(big.NewInt(want)) != 0 {
			t.Errorf("buggyCount(%s) = %s, want %d", s, got, want)
		}
	}
}

func TestOverlaps(t *testing.T) {
	pools := []Pool{
		{Name: "a", Ranges: []Range{mustRange("10.0.0.0/24"), mustRange("10.1.0.0/24")}},
		{Name: "b", Ranges: []Range{mustRange("10.0.0.200-10.0.1.5")}},
		{Name: "c", Ranges: []Range{mustRange("2001:db8::/120"), mustRange("2001:db8::ff-2001:db8::1ff")}},
		{Name: "d", Ranges: []Range{mustRange("10.2.0.0/24")}},
	}
	got := Overlaps(pools)
	if len(got) != 2 {
		t.Fatalf("Overlaps = %+v, want 2 overlaps", got)
	}
	if got[0].Pool != "a" || got[0].OtherPool != "b" || got[1].Pool != "c" || got[1].OtherPool != "c" {
		t.Errorf("Overlaps = %+v, want a~b and c~c", got)
	}
}

func mustRange(s string) Range {
	r, err := ParseRange(s)
	if err != nil {
		panic(err)
	}
	return r
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"192.168.56.100-192.168.56.110", "10.0.0.0/28", "2001:db8::/64", "10.0.0.1", "1-2", "::ffff:1.2.3.4/128", "fe80::%x/64", "10.0.0.9-10.0.0.1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			if r != (Range{}) {
				t.Fatalf("ParseRange(%q) returned %v with error %v", s, r, err)
			}
			return
		}
		if !r.First.IsValid() || r.Last.Less(r.First) || r.First.Is4() != r.Last.Is4() {
			t.Fatalf("ParseRange(%q) = invalid range %v", s, r)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) || r.Size().Sign() <= 0 {
			t.Fatalf("ParseRange(%q) = %v does not contain its ends", s, r)
		}
		// What String prints must parse back to the same range, since
		// errors and check-config output show it to users.
		text := r.String()
		if r.First == r.Last {
			text += "-" + text
		}
		back, err := ParseRange(text)
		if err != nil || back != r {
			t.Fatalf("round trip of %v through %q gave %v, %v", r, text, back, err)
		}
	})
}
