//go:build integration

package membership

import (
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

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
