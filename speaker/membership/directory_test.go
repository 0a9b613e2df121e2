package membership

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0xc6, 0x33, 0x64, last} }

// TestDirectoryLearnsPublishedMACs: every member's MACs, its own included,
// end up in every member's Directory under the member's name.
func TestDirectoryLearnsPublishedMACs(t *testing.T) {
	logger := testLogger(t, nil)
	nets := []*cutTransport{newCutTransport(t, logger), newCutTransport(t, logger)}
	peers := []string{nets[0].addr(), nets[1].addr()}
	dirs := []*Directory{NewDirectory(), NewDirectory()}
	macs := [][]net.HardwareAddr{{mac(0x0b)}, {mac(0x0c), mac(0x1c)}}
	var ms []*member
	for i, name := range []string{"a", "b"} {
		m := newMember(t, name, Config{Peers: peers, Logger: logger, Transport: nets[i], MACs: macs[i], Directory: dirs[i]})
		m.net = nets[i]
		ms = append(ms, m)
	}
	rejoinAll(t, ms)
	want := map[string]string{
		mac(0x0b).String(): "a", mac(0x0c).String(): "b", mac(0x1c).String(): "b", mac(0x99).String(): "",
	}
	for i, d := range dirs {
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := map[string]string{}
			for m := range want {
				hw, _ := net.ParseMAC(m)
				got[m] = d.NodeOf(hw)
			}
			diff := cmp.Diff(want, got)
			if diff == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("member %s's directory (-want +got):\n%s", ms[i].Name(), diff)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// New MACs replace the old ones everywhere.
	if err := ms[1].SetMACs([]net.HardwareAddr{mac(0x2c)}, time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for dirs[0].NodeOf(mac(0x2c)) != "b" || dirs[0].NodeOf(mac(0x1c)) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("after SetMACs: NodeOf(%s) = %q, NodeOf(%s) = %q; want b and none",
				mac(0x2c), dirs[0].NodeOf(mac(0x2c)), mac(0x1c), dirs[0].NodeOf(mac(0x1c)))
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Kept after the member goes: a speaker the others think dead may
	// still be announcing, and that is when naming it matters most.
	ms[1].Shutdown()
	time.Sleep(100 * time.Millisecond)
	if got := dirs[0].NodeOf(mac(0x2c)); got != "b" {
		t.Errorf("after b shut down, NodeOf(%s) = %q, want b", mac(0x2c), got)
	}
}

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
