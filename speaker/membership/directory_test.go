package membership

import (
	"bytes"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0xc6, 0x33, 0x64, last} }

func TestMetaEncoding(t *testing.T) {
	macs := []net.HardwareAddr{mac(1), {1, 2, 3}, mac(2), mac(3)}
	tests := []struct {
		name  string
		limit int
		want  int // MACs kept
	}{
		{"all fit", 512, 3},
		{"room for two", 1 + 2*macLen + 5, 2},
		{"room for none", 5, 0},
	}
	for _, tt := range tests {
		b := encodeMeta(macs, tt.limit)
		if len(b) > tt.limit {
			t.Errorf("%s: %d bytes, over the limit %d", tt.name, len(b), tt.limit)
		}
		got, ok := decodeMeta(b)
		if !ok || len(got) != tt.want {
			t.Errorf("%s: decoded %d MACs (ok %v), want %d", tt.name, len(got), ok, tt.want)
		}
	}
	for _, bad := range [][]byte{nil, {2, 1, 2, 3, 4, 5, 6}, {metaVersion, 1, 2, 3}} {
		if _, ok := decodeMeta(bad); ok {
			t.Errorf("decodeMeta(%x) accepted", bad)
		}
	}
	if encodeMeta(macs, 0) != nil {
		t.Error("encodeMeta with limit 0 returned bytes")
	}
}

// FuzzDecodeMeta: metadata comes from members holding the key, but maybe
// another version of the speaker; nothing it holds may crash a reader, and
// whatever is accepted must round-trip.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta([]net.HardwareAddr{mac(1), mac(2)}, 512))
	f.Add([]byte{})
	f.Add([]byte{metaVersion, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		macs, ok := decodeMeta(b)
		if !ok {
			return
		}
		hw := make([]net.HardwareAddr, len(macs))
		for i := range macs {
			hw[i] = macs[i][:]
		}
		if again := encodeMeta(hw, len(b)); !bytes.Equal(again, b) {
			t.Fatalf("round trip %x -> %x", b, again)
		}
	})
}

// TestDirectoryMACsOf: a member's MACs are the ones it published last and
// still holds; a MAC another member published since is that member's.
func TestDirectoryMACsOf(t *testing.T) {
	d := NewDirectory()
	d.learn("a", encodeMeta([]net.HardwareAddr{mac(0x0b), mac(0x1b)}, 512))
	d.learn("b", encodeMeta([]net.HardwareAddr{mac(0x0c)}, 512))
	if diff := cmp.Diff([]string{mac(0x0b).String(), mac(0x1b).String()}, macStrings(d.MACsOf("a"))); diff != "" {
		t.Errorf("MACsOf(a) (-want +got):\n%s", diff)
	}
	// b's NIC moved to a's old MAC (a replaced card, a VM's MAC reused).
	d.learn("b", encodeMeta([]net.HardwareAddr{mac(0x0c), mac(0x1b)}, 512))
	if diff := cmp.Diff([]string{mac(0x0b).String()}, macStrings(d.MACsOf("a"))); diff != "" {
		t.Errorf("MACsOf(a) after b took one (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{mac(0x0c).String(), mac(0x1b).String()}, macStrings(d.MACsOf("b"))); diff != "" {
		t.Errorf("MACsOf(b) (-want +got):\n%s", diff)
	}
	if got := d.MACsOf("c"); got != nil {
		t.Errorf("MACsOf of an unknown member = %v, want nil", got)
	}
	// The result is a copy.
	d.MACsOf("a")[0][0] = 0xff
	if got := d.MACsOf("a")[0]; got.String() != mac(0x0b).String() {
		t.Errorf("changing MACsOf's result changed the directory: %s", got)
	}
}

func macStrings(macs []net.HardwareAddr) []string {
	var out []string
	for _, m := range macs {
		out = append(out, m.String())
	}
	return out
}
