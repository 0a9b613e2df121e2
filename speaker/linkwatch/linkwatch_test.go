package linkwatch

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeSource is a kernel the test drives: set the links, then notify.
type fakeSource struct {
	mu       sync.Mutex
	current  []Link
	listErr  error
	subs     int
	subErr   error
	events   chan struct{}
	lastStop chan struct{}
}

func newFakeSource(links ...Link) *fakeSource { return &fakeSource{current: links} }

func (f *fakeSource) subscribe() (*subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs++
	if f.subErr != nil {
		return nil, f.subErr
	}
	ch := make(chan struct{}, 16)
	stopped := make(chan struct{})
	f.events, f.lastStop = ch, stopped
	var once sync.Once
	return &subscription{events: ch, stop: func() { once.Do(func() { close(stopped) }) }}, nil
}

func (f *fakeSource) links() ([]Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	return append([]Link(nil), f.current...), nil
}

func (f *fakeSource) set(links ...Link) {
	f.mu.Lock()
	f.current = links
	ch := f.events
	f.mu.Unlock()
	ch <- struct{}{}
}

// breakSub closes the current subscription's channel, as the library does
// when its socket fails.
func (f *fakeSource) breakSub() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.events)
}

func (f *fakeSource) subscriptions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subs
}

// calls records what the watcher did, in order.
type calls struct {
	mu  sync.Mutex
	log []string
	ch  chan string
}

func newCalls() *calls { return &calls{ch: make(chan string, 100)} }

func (c *calls) add(s string) {
	c.mu.Lock()
	c.log = append(c.log, s)
	c.mu.Unlock()
	c.ch <- s
}

// next waits for the next call and checks it.
func (c *calls) next(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-c.ch:
		if got != want {
			t.Fatalf("next call %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no call %q within 5 s", want)
	}
}

// none checks that nothing is called for a while.
func (c *calls) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case got := <-c.ch:
		t.Fatalf("unexpected call %q", got)
	case <-time.After(d):
	}
}

func eth0(carrier bool) Link {
	return Link{Index: 2, Name: "eth0", Up: true, Carrier: carrier}
}

func cni0() Link { return Link{Index: 3, Name: "cni0", Up: true, Carrier: true} }

func startWatcher(t *testing.T, src *fakeSource, cfg Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := src.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{cfg: cfg, src: src}
	if w.cfg.Resync == 0 {
		w.cfg.Resync = time.Hour
	}
	if w.cfg.RetryDelay == 0 {
		w.cfg.RetryDelay = 10 * time.Millisecond
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = w.run(ctx, sub) }()
	t.Cleanup(func() { cancel(); <-done })
}

// config records Changed (as "changed"), Isolate and Reconnect; the
// watched links are eth0 only, as on a node whose memberlist address is on
// eth0 next to a CNI bridge.
func config(c *calls, reconnect func() error) Config {
	return Config{
		Changed: func(links []Link) []string {
			c.add("changed")
			return []string{"eth0"}
		},
		Isolate: func() { c.add("isolate") },
		Reconnect: func() error {
			c.add("reconnect")
			if reconnect != nil {
				return reconnect()
			}
			return nil
		},
	}
}

func TestCablePullAndReturn(t *testing.T) {
	synctest.Test(t, testCablePullAndReturn)
}

func testCablePullAndReturn(t *testing.T) {
	src := newFakeSource(eth0(true), cni0())
	c := newCalls()
	startWatcher(t, src, config(c, nil))
	c.next(t, "changed") // the start
	c.none(t, 50*time.Millisecond)

	// The CNI bridge keeps carrier, but it does not reach the others.
	src.set(eth0(false), cni0())
	c.next(t, "changed")
	c.next(t, "isolate")

	// Other changes while cut off change nothing.
	src.set(eth0(false), cni0(), Link{Index: 9, Name: "veth9", Up: true, Carrier: true})
	c.next(t, "changed")
	c.none(t, 50*time.Millisecond)

	src.set(eth0(true), cni0())
	c.next(t, "changed")
	c.next(t, "reconnect")

	// Carrier still there: nothing more.
	src.set(eth0(true), cni0())
	c.next(t, "changed")
	c.none(t, 50*time.Millisecond)
}

func TestReconnectIsRetriedUntilItWorks(t *testing.T) {
	synctest.Test(t, testReconnectIsRetriedUntilItWorks)
}

func testReconnectIsRetriedUntilItWorks(t *testing.T) {
	src := newFakeSource(eth0(true))
	c := newCalls()
	var mu sync.Mutex
	failures := 3
	startWatcher(t, src, config(c, func() error {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			return errors.New("memberlist: bind: address in use")
		}
		return nil
	}))
	c.next(t, "changed")
	src.set(eth0(false))
	c.next(t, "changed")
	c.next(t, "isolate")
	src.set(eth0(true))
	for range 4 { // three failures, then success, without any notification
		c.next(t, "changed")
		c.next(t, "reconnect")
	}
	c.none(t, 100*time.Millisecond)
}

func TestBrokenSubscriptionIsRenewed(t *testing.T) {
	synctest.Test(t, testBrokenSubscriptionIsRenewed)
}

func testBrokenSubscriptionIsRenewed(t *testing.T) {
	src := newFakeSource(eth0(true))
	c := newCalls()
	startWatcher(t, src, config(c, nil))
	c.next(t, "changed")
	src.breakSub()
	// A new subscription, then a snapshot: a change lost in between is seen.
	c.next(t, "changed")
	if n := src.subscriptions(); n != 2 {
		t.Fatalf("%d subscriptions, want 2", n)
	}
	src.set(eth0(false))
	c.next(t, "changed")
	c.next(t, "isolate")
}

func TestFailedSnapshotIsRetried(t *testing.T) {
	synctest.Test(t, testFailedSnapshotIsRetried)
}

func testFailedSnapshotIsRetried(t *testing.T) {
	src := newFakeSource(eth0(true))
	src.listErr = errors.New("netlink: dump interrupted")
	c := newCalls()
	startWatcher(t, src, config(c, nil))
	c.none(t, 50*time.Millisecond)
	src.mu.Lock()
	src.listErr = nil
	src.current = []Link{eth0(false)}
	src.mu.Unlock()
	// No notification: the retry alone brings the snapshot.
	c.next(t, "changed")
	c.next(t, "isolate")
}

func TestResyncWithoutNotifications(t *testing.T) {
	synctest.Test(t, testResyncWithoutNotifications)
}

func testResyncWithoutNotifications(t *testing.T) {
	src := newFakeSource(eth0(true))
	c := newCalls()
	cfg := config(c, nil)
	cfg.Resync = 30 * time.Millisecond
	startWatcher(t, src, cfg)
	c.next(t, "changed")
	src.mu.Lock()
	src.current = []Link{eth0(false)}
	src.mu.Unlock()
	c.next(t, "changed")
	c.next(t, "isolate")
}

func TestCarrier(t *testing.T) {
	links := []Link{eth0(false), cni0()}
	for _, tc := range []struct {
		watched []string
		want    bool
	}{
		{nil, true},
		{[]string{"eth0"}, false},
		{[]string{"eth0", "cni0"}, true},
		{[]string{"bond0"}, false}, // gone: no carrier
	} {
		if got := Carrier(links, tc.watched); got != tc.want {
			t.Errorf("Carrier(%v) = %v, want %v", tc.watched, got, tc.want)
		}
	}
}
