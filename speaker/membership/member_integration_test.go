//go:build integration

package membership

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/memberlist"
)

// restartable is a Member whose groups run on cuttable transports; cut and
// uncut act on whichever transport the current group uses, as a cable
// pull acts on whatever socket the process has open.
type restartable struct {
	*Member
	rec *recorder

	mu   sync.Mutex
	nets []*cutTransport
}

func (r *restartable) current() *cutTransport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nets[len(r.nets)-1]
}

func startMembers(t *testing.T, n int) []*restartable {
	t.Helper()
	logger := testLogger(t, new(lineCounts))
	rs := make([]*restartable, n)
	var peers []string
	for i := range rs {
		rs[i] = &restartable{rec: newRecorder(t)}
		rs[i].nets = []*cutTransport{newCutTransport(t, logger)}
		peers = append(peers, rs[i].nets[0].addr())
	}
	for i, r := range rs {
		first := true
		m := &Member{cfg: Config{
			Name: string(rune('a' + i)), Peers: peers, Logger: logger, Key: testKey(1),
			OnChange: r.rec.onChange,
		}}
		m.newTransport = func() memberlist.Transport {
			if first {
				first = false
				return r.nets[0]
			}
			// The same port, as a speaker restarting memberlist binds
			// its configured one: members refuse a name that comes back
			// from another address.
			ct := newCutTransportAt(t, logger, r.nets[0].inner.GetAutoBindPort())
			r.mu.Lock()
			r.nets = append(r.nets, ct)
			r.mu.Unlock()
			return ct
		}
		g, err := m.start(nil)
		if err != nil {
			t.Fatal(err)
		}
		m.g, m.last = g, g
		t.Cleanup(m.Shutdown)
		r.Member = m
	}
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Rejoin(context.Background()) }()
	}
	wg.Wait()
	all := []string{"a", "b", "c"}[:n]
	for _, r := range rs {
		if _, ok := r.rec.waitFor(0, detectBound, equalTo(all)); !ok {
			t.Fatalf("a member never saw %v: %v", all, r.rec.snapshot())
		}
	}
	return rs
}

// TestIsolateAndReconnect: the cut-off member's "everyone else is dead"
// verdicts never reach the others, and after Reconnect every member sees
// all three again.
func TestIsolateAndReconnect(t *testing.T) {
	ms := startMembers(t, 3)
	a, b, c := ms[0], ms[1], ms[2]
	all := []string{"a", "b", "c"}
	from := []int{a.rec.count(), b.rec.count(), c.rec.count()}

	c.current().cut.Store(true)
	for i, m := range []*restartable{a, b} {
		if _, ok := m.rec.waitFor(from[i], detectBound, without("c")); !ok {
			t.Fatalf("member %d did not drop the cut-off c", i)
		}
	}
	if _, ok := c.rec.waitFor(from[2], 3*detectBound, equalTo([]string{"c"})); !ok {
		t.Fatalf("c never saw itself alone; it sees %v", c.Members())
	}
	// What the link watcher does on carrier loss.
	c.Isolate()
	if got := c.Members(); got != nil {
		t.Fatalf("Members while isolated = %v, want nil", got)
	}
	c.Isolate() // twice is harmless
	if err := c.Leave(time.Second); err != nil {
		t.Fatalf("Leave while isolated: %v", err)
	}

	// The cable returns: the old transport would work again, but the old
	// group is gone; Reconnect starts a fresh one on a new transport.
	c.nets[0].cut.Store(false)
	start := time.Now()
	if err := c.Reconnect(context.Background()); err != nil {
		t.Fatalf("Reconnect: %v", err)
	}
	took := time.Since(start)
	if diff := cmp.Diff(all, c.Members()); diff != "" {
		t.Errorf("c's view right after Reconnect (-want +got):\n%s", diff)
	}
	for _, m := range []*restartable{a, b} {
		if _, ok := m.rec.waitFor(0, detectBound, func([]string) bool { return slices.Equal(m.Members(), all) }); !ok {
			t.Errorf("a member sees %v after the reconnect", m.Members())
		}
	}
	// a and b never lost each other: c's verdicts about them never spread.
	for _, m := range []*restartable{a, b} {
		for _, ch := range m.rec.snapshot() {
			if !slices.Contains(ch.members, "a") || !slices.Contains(ch.members, "b") {
				t.Errorf("a healthy member saw %v", ch)
			}
		}
	}
	if len(c.nets) != 2 {
		t.Errorf("c used %d transports, want 2 (one per group)", len(c.nets))
	}
	t.Logf("Reconnect took %v", took.Round(time.Millisecond))

	// Reconnect without Isolate only rejoins.
	if err := a.Reconnect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(a.nets) != 1 {
		t.Errorf("a reconnected without isolation and started a new group")
	}
}

// TestReconnectFindsLateJoiners: a member that joined after c started is
// not in c's configured peers; c's next group still finds it through the
// addresses the previous group saw.
func TestReconnectFindsLateJoiners(t *testing.T) {
	ms := startMembers(t, 2)
	a, b := ms[0], ms[1]
	// b forgets its configured peers: only the addresses its previous
	// group saw can lead the new one to a.
	b.cfg.Peers = nil
	b.Isolate()
	if err := b.Reconnect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b"}, b.Members()); diff != "" {
		t.Errorf("b after Reconnect with no configured peers (-want +got):\n%s", diff)
	}
	if _, ok := a.rec.waitFor(0, detectBound, func([]string) bool { return slices.Equal(a.Members(), []string{"a", "b"}) }); !ok {
		t.Errorf("a sees %v after b's reconnect", a.Members())
	}
}
