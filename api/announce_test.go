package api

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestAnnouncementsRoundTrip(t *testing.T) {
	in := []Announcement{
		{IP: netip.MustParseAddr("198.51.100.10"), Node: "node-a", Interface: "eth0", MAC: "02:00:00:00:00:01"},
		{IP: netip.MustParseAddr("2001:db8:100::10"), Node: "node-b"},
		{IP: netip.MustParseAddr("198.51.100.11"), Node: "node-c", MAC: "02:00:00:00:00:03"},
	}
	msg := FormatAnnouncements(in)
	want := "198.51.100.10 by node-a on eth0 (02:00:00:00:00:01); 2001:db8:100::10 by node-b; 198.51.100.11 by node-c (02:00:00:00:00:03)"
	if msg != want {
		t.Fatalf("FormatAnnouncements = %q, want %q", msg, want)
	}
	out, err := ParseAnnouncements(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("ParseAnnouncements = %+v, want %+v", out, in)
	}
}

func TestParseAnnouncementsRejects(t *testing.T) {
	for _, msg := range []string{"node-a", "not-an-ip by node-a", "198.51.100.1 by ", "198.51.100.1 by  on eth0"} {
		if _, err := ParseAnnouncements(msg); err == nil {
			t.Errorf("ParseAnnouncements(%q) succeeded", msg)
		}
	}
}

func FuzzParseAnnouncements(f *testing.F) {
	f.Add("198.51.100.10 by node-a on eth0 (02:00:00:00:00:01); 2001:db8:100::10 by node-b")
	f.Add("")
	f.Add("; ; by (")
	f.Fuzz(func(t *testing.T, msg string) {
		as, err := ParseAnnouncements(msg)
		if err != nil {
			return
		}
		// What parses must survive a round trip unchanged.
		again, err := ParseAnnouncements(FormatAnnouncements(as))
		if err != nil || !reflect.DeepEqual(again, as) {
			t.Fatalf("round trip of %q: %+v, %v; first %+v", msg, again, err, as)
		}
	})
}
