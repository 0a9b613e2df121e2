//go:build integration

package membership

// These tests run real memberlist members on loopback sockets and wait for
// wall-clock failure detection, so they belong to the integration tier (no
// root, no API server needed), not to `make unit`.

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/memberlist"
)

// detectBound is the generous limit for "eventually": timing is measured
// and logged, not asserted, because the machine is shared.
const detectBound = 5 * time.Second

// TestNewCopiesKey: wiping the caller's buffer after New must not change
// the key in use.
func TestNewCopiesKey(t *testing.T) {
	key := testKey(1)
	ms := startCluster(t, 2, nil)
	tr := newCutTransport(t, logr.Discard())
	g, err := New(Config{Name: "z", Key: key, Transport: tr, Peers: []string{ms[0].Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown()
	clear(key)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Rejoin(ctx); err != nil {
		t.Fatalf("Rejoin after wiping the caller's key: %v", err)
	}
}

func TestThreeMembersJoin(t *testing.T) {
	ms := startCluster(t, 3, nil)
	want := []string{"a", "b", "c"}
	for _, m := range ms {
		if diff := cmp.Diff(want, m.Members()); diff != "" {
			t.Errorf("%s Members() (-want +got):\n%s", m.Name(), diff)
		}
		changes := m.rec.snapshot()
		if diff := cmp.Diff(want, changes[len(changes)-1].members); diff != "" {
			t.Errorf("%s last OnChange (-want +got):\n%s", m.Name(), diff)
		}
		// Every call reports a set different from the one before.
		for i := 1; i < len(changes); i++ {
			if slices.Equal(changes[i-1].members, changes[i].members) {
				t.Errorf("%s: OnChange repeated %v", m.Name(), changes[i].members)
			}
		}
		if !slices.Contains(m.Members(), m.Name()) {
			t.Errorf("%s does not list itself", m.Name())
		}
	}
}

// TestDefaultTransport runs members on memberlist's own UDP/TCP
// transport, configured through BindAddr, BindPort and AdvertiseAddr.
func TestDefaultTransport(t *testing.T) {
	ms := startPlainCluster(t, 2, nil)
	for _, m := range ms {
		if diff := cmp.Diff([]string{"a", "b"}, m.Members()); diff != "" {
			t.Errorf("%s Members() (-want +got):\n%s", m.Name(), diff)
		}
		if !strings.HasPrefix(m.Addr(), "127.0.0.1:") {
			t.Errorf("%s advertises %s", m.Name(), m.Addr())
		}
	}
}

// TestRejoinAlone: with no peers Rejoin returns at once and releases
// OnChange with the lone member.
func TestRejoinAlone(t *testing.T) {
	rec := newRecorder(t)
	g, err := New(Config{Name: "a", Key: testKey(1), Transport: newCutTransport(t, logr.Discard()), OnChange: rec.onChange})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown()
	time.Sleep(20 * time.Millisecond)
	if n := rec.count(); n != 0 {
		t.Errorf("OnChange called %d times before the first Rejoin", n)
	}
	if err := g.Rejoin(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec.waitFor(0, time.Second, equalTo([]string{"a"})); !ok {
		t.Errorf("OnChange not called with [a]: %v", rec.snapshot())
	}
}

// measureDeparture starts a cluster of three, makes c go away with depart
// and returns how long until a and b both reported it gone through
// OnChange, and how long depart itself took.
func measureDeparture(t *testing.T, depart func(*member)) (seen, took time.Duration) {
	t.Helper()
	ms := startCluster(t, 3, nil)
	// Let the cluster settle into steady probing, at a random phase.
	time.Sleep(200*time.Millisecond + rand.N(100*time.Millisecond))
	victim, observers := ms[2], ms[:2]
	from := []int{observers[0].rec.count(), observers[1].rec.count()}

	start := time.Now()
	depart(victim)
	took = time.Since(start)
	for i, o := range observers {
		c, ok := o.rec.waitFor(from[i], detectBound, without(victim.Name()))
		if !ok {
			t.Fatalf("%s did not see %s gone within %v", o.Name(), victim.Name(), detectBound)
		}
		seen = max(seen, c.at.Sub(start))
		if diff := cmp.Diff([]string{"a", "b"}, o.Members()); diff != "" {
			t.Errorf("%s Members() (-want +got):\n%s", o.Name(), diff)
		}
	}
	return seen, took
}

// TestCrashDetection: a member that stops without leaving (SIGKILL) is
// declared dead by failure detection.
func TestCrashDetection(t *testing.T) {
	if raceEnabled {
		t.Skip("timing is meaningless under the race detector")
	}
	var seen durations
	for range trials(t) {
		d, _ := measureDeparture(t, func(m *member) { _ = m.Shutdown() })
		seen = append(seen, d)
	}
	t.Logf("crash (Shutdown without Leave) seen gone by both others: %v", seen)
}

// TestLeave: a member that leaves is dropped at once.
func TestLeave(t *testing.T) {
	if raceEnabled {
		t.Skip("timing is meaningless under the race detector")
	}
	var seen, took durations
	for range trials(t) {
		d, l := measureDeparture(t, func(m *member) {
			if err := m.Leave(time.Second); err != nil {
				t.Errorf("Leave: %v", err)
			}
			_ = m.Shutdown()
		})
		seen, took = append(seen, d), append(took, l)
	}
	t.Logf("leave seen gone by both others (from the Leave call): %v", seen)
	t.Logf("Leave+Shutdown blocked for: %v", took)
}

func trials(t *testing.T) int {
	if testing.Short() {
		return 3
	}
	return 10
}

// TestWrongKey: a member with another key, or with none, cannot join and
// never shows up in the others' lists.
func TestWrongKey(t *testing.T) {
	ms := startCluster(t, 3, nil)
	target := ms[0].Addr()

	rec := newRecorder(t)
	intruder, err := New(Config{
		Name:      "d",
		Peers:     []string{target},
		Key:       testKey(2),
		Transport: newCutTransport(t, logr.Discard()),
		OnChange:  rec.onChange,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := intruder.Rejoin(ctx); err == nil {
		t.Error("Rejoin with the wrong key succeeded")
	} else {
		t.Logf("Rejoin with the wrong key: %v", err)
	}
	if diff := cmp.Diff([]string{"d"}, intruder.Members()); diff != "" {
		t.Errorf("intruder Members() (-want +got):\n%s", diff)
	}

	// A plain memberlist without encryption, as a spoofer would run, is
	// refused as well.
	mc := memberlist.DefaultLANConfig()
	mc.Name = "e"
	mc.Transport = newCutTransport(t, logr.Discard())
	mc.Logger = NewStdLogger(logr.Discard())
	plain, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Shutdown()
	if _, err := plain.Join([]string{target}); err == nil {
		t.Error("unencrypted Join succeeded")
	}

	// Give stray gossip time to do damage, then check nobody let them in.
	time.Sleep(500 * time.Millisecond)
	for _, m := range ms {
		if diff := cmp.Diff([]string{"a", "b", "c"}, m.Members()); diff != "" {
			t.Errorf("%s Members() (-want +got):\n%s", m.Name(), diff)
		}
		for _, c := range m.rec.snapshot() {
			if slices.Contains(c.members, "d") || slices.Contains(c.members, "e") {
				t.Errorf("%s reported an intruder: %v", m.Name(), c.members)
			}
		}
	}
}

// TestRejoinAfterPartition cuts c off while its process lives on. Both
// sides declare the other dead; after the link is back, Rejoin returns
// only once c's view is merged, and everyone sees three members again.
func TestRejoinAfterPartition(t *testing.T) {
	counts := new(lineCounts)
	ms := startCluster(t, 3, counts)
	a, b, c := ms[0], ms[1], ms[2]
	time.Sleep(200 * time.Millisecond)

	from := []int{a.rec.count(), b.rec.count(), c.rec.count()}
	start := time.Now()
	c.net.cut.Store(true)
	for i, m := range []*member{a, b} {
		ch, ok := m.rec.waitFor(from[i], detectBound, without("c"))
		if !ok {
			t.Fatalf("%s did not declare c dead", m.Name())
		}
		t.Logf("%s saw the cut-off c gone after %v", m.Name(), ch.at.Sub(start).Round(time.Millisecond))
	}
	ch, ok := c.rec.waitFor(from[2], 3*detectBound, equalTo([]string{"c"}))
	if !ok {
		t.Fatalf("c did not declare a and b dead; c sees %v", c.Members())
	}
	t.Logf("cut-off c saw itself alone after %v (health score %d)", ch.at.Sub(start).Round(time.Millisecond), c.HealthScore())

	// While cut, Rejoin cannot succeed.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := c.Rejoin(ctx)
	cancel()
	if err == nil {
		t.Fatal("Rejoin succeeded while cut off")
	}
	t.Logf("Rejoin while cut: %v", err)

	fromC := c.rec.count()
	c.net.cut.Store(false)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start = time.Now()
	if err := c.Rejoin(ctx); err != nil {
		t.Fatalf("Rejoin after the cut: %v", err)
	}
	took := time.Since(start)
	// The point of Rejoin: when it returns, c's view is already merged.
	all := []string{"a", "b", "c"}
	if diff := cmp.Diff(all, c.Members()); diff != "" {
		t.Errorf("c Members() right after Rejoin (-want +got):\n%s", diff)
	}
	// OnChange, held back during Rejoin, reports the merged view and
	// nothing in between.
	for _, ch := range c.rec.snapshot()[fromC:] {
		if ch.at.Before(start.Add(took)) {
			t.Errorf("c's OnChange ran during Rejoin with %v", ch.members)
		}
	}
	if _, ok := c.rec.waitFor(fromC, time.Second, equalTo(all)); !ok {
		t.Errorf("c's OnChange did not report %v: %v", all, c.rec.snapshot()[fromC:])
	}
	for _, m := range ms {
		if _, ok := m.rec.waitFor(0, detectBound, func([]string) bool { return slices.Equal(m.Members(), all) }); !ok {
			t.Errorf("%s sees %v after the rejoin", m.Name(), m.Members())
		}
	}
	t.Logf("Rejoin after the cut took %v; %v", took.Round(time.Millisecond), counts)
}

// TestNoFalseFailoverUnderLoad keeps every CPU busy for 15 s and checks
// that no member sees any membership change. It also counts near misses:
// suspicions that were refuted in time.
//
// By default the load is GOMAXPROCS×2 busy `sh` loops in other processes:
// the kernel scheduler shares the CPUs with the members, as on a busy node.
// That is what the integration tier checks. Knobs for exploring:
//
//	IRONLB_LOAD_DURATION=20s        how long to load
//	IRONLB_LOAD_KIND=goroutines     spinning goroutines in this process
//	                                instead, harsher than a busy node: the
//	                                members share the Go scheduler with the
//	                                spinners, and a goroutine woken by the
//	                                network poller can wait several 10 ms
//	                                preemption slices for a P (on a shared
//	                                2-core host at load 10 this gives false
//	                                deaths)
//	IRONLB_LOAD_TRANSPORT=cut       the test transport, which adds a
//	                                goroutine hop per packet (harsher still)
func TestNoFalseFailoverUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 15 s")
	}
	if raceEnabled {
		t.Skip("timing is meaningless under the race detector")
	}
	loadFor := 15 * time.Second
	if s := getenvDuration(t, "IRONLB_LOAD_DURATION"); s > 0 {
		loadFor = s
	}

	counts := new(lineCounts)
	var ms []*member
	if os.Getenv("IRONLB_LOAD_TRANSPORT") == "cut" {
		ms = startCluster(t, 3, counts)
	} else {
		ms = startPlainCluster(t, 3, counts)
	}
	time.Sleep(500 * time.Millisecond)
	before := make([]int, len(ms))
	for i, m := range ms {
		before[i] = m.rec.count()
	}
	settled := counts.String()

	spinners := runtime.GOMAXPROCS(0) * 2
	kind := "busy-loop processes"
	var stopLoad func()
	if os.Getenv("IRONLB_LOAD_KIND") == "goroutines" {
		kind = "goroutines in this process"
		stopLoad = spinGoroutines(spinners)
	} else {
		stopLoad = spinProcesses(t, spinners)
	}
	var maxScore int
	deadline := time.Now().Add(loadFor)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		for _, m := range ms {
			maxScore = max(maxScore, m.HealthScore())
		}
	}
	stopLoad()
	// Suspicions raised at the end of the load may still be running out.
	time.Sleep(2 * time.Second)

	t.Logf("%d spinning %s for %v, GOMAXPROCS=%d: %v (before load: %s); highest health score %d",
		spinners, kind, loadFor, runtime.GOMAXPROCS(0), counts, settled, maxScore)
	for i, m := range ms {
		if changes := m.rec.snapshot()[before[i]:]; len(changes) > 0 {
			t.Errorf("%s saw membership changes under load: %v", m.Name(), changes)
		}
		if diff := cmp.Diff([]string{"a", "b", "c"}, m.Members()); diff != "" {
			t.Errorf("%s Members() after load (-want +got):\n%s", m.Name(), diff)
		}
	}
}

func spinGoroutines(n int) (stop func()) {
	var done atomic.Bool
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := 0
			for !done.Load() {
				x++
			}
			_ = x
		}()
	}
	return func() {
		done.Store(true)
		wg.Wait()
	}
}

func spinProcesses(t *testing.T, n int) (stop func()) {
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		cmds = nil
	}
	t.Cleanup(stop)
	for range n {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatalf("starting a busy loop: %v", err)
		}
		cmds = append(cmds, c)
	}
	return stop
}

func getenvDuration(t *testing.T, key string) time.Duration {
	s := strings.TrimSpace(os.Getenv(key))
	if s == "" {
		return 0
	}
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s=%q: %v", key, s, err)
	}
	return d
}

// TestSend: a message sent to a live member reaches its OnMessage, intact
// and from a copied buffer; a name nobody answers to is an error.
func TestSend(t *testing.T) {
	logger := testLogger(t, nil)
	nets := []*cutTransport{newCutTransport(t, logger), newCutTransport(t, logger)}
	peers := []string{nets[0].addr(), nets[1].addr()}
	got := make(chan []byte, 4)
	a := newMember(t, "a", Config{Peers: peers, Logger: logger, Transport: nets[0]})
	b := newMember(t, "b", Config{Peers: peers, Logger: logger, Transport: nets[1], OnMessage: func(m []byte) { got <- m }})
	rejoinAll(t, []*member{a, b})

	msg := []byte(`{"reannounce":"198.51.100.100"}`)
	if err := a.Send("b", msg); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if string(m) != string(msg) {
			t.Errorf("b received %q, want %q", m, msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b received nothing within 5 s")
	}
	if err := a.Send("nobody", msg); !errors.Is(err, ErrUnknownMember) {
		t.Errorf("Send to an unknown member: %v, want ErrUnknownMember", err)
	}
}
