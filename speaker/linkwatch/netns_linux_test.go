//go:build linux && e2e

package linkwatch

// A real kernel: veth links in a network namespace this test creates and
// removes. Nothing is sent anywhere; the test only changes link states
// inside its own namespace and watches the notifications.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlb/ironlb/hack/netnstest"

	"github.com/vishvananda/netns"
)

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// snapshots collects what Changed saw.
type snapshots struct {
	mu   sync.Mutex
	last []Link
	ch   chan string
}

func (s *snapshots) changed(links []Link) []string {
	s.mu.Lock()
	s.last = links
	s.mu.Unlock()
	select {
	case s.ch <- "changed":
	default:
	}
	return []string{"va"}
}

func (s *snapshots) has(name string) (Link, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.last, func(l Link) bool { return l.Name == name })
	if i < 0 {
		return Link{}, false
	}
	return s.last[i], true
}

func TestKernelNotifications(t *testing.T) {
	netnstest.Require(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	ns := "lw-" + hex.EncodeToString(b)
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ip(t, "-n", ns, "route", "add", "unreachable", "default")
	ip(t, "-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb")
	ip(t, "-n", ns, "link", "set", "va", "up")
	ip(t, "-n", ns, "link", "set", "vb", "up")

	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })

	snaps := &snapshots{ch: make(chan string, 1)}
	events := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Changed:   snaps.changed,
			Isolate:   func() { events <- "isolate" },
			Reconnect: func() error { events <- "reconnect"; return nil },
			Namespace: &h,
			Resync:    time.Hour, // only notifications may bring changes here
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	waitFor := func(what string, ok func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !ok() {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s: not within 5 s", what)
			}
			time.Sleep(2 * time.Millisecond)
		}
		return time.Since(start)
	}
	expect := func(want string) time.Duration {
		t.Helper()
		start := time.Now()
		select {
		case got := <-events:
			if got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s within 5 s", want)
		}
		return time.Since(start)
	}

	waitFor("va with carrier in a snapshot", func() bool { l, ok := snaps.has("va"); return ok && l.Carrier })

	// The peer going down takes va's carrier: a pulled cable.
	ip(t, "-n", ns, "link", "set", "vb", "down")
	t.Logf("isolated %v after the peer went down", expect("isolate"))
	if l, _ := snaps.has("va"); l.Carrier || !l.Up {
		t.Fatalf("va after the cut: %+v, want up without carrier", l)
	}
	ip(t, "-n", ns, "link", "set", "vb", "up")
	t.Logf("reconnected %v after the peer came back", expect("reconnect"))

	// An interface created after the start is in the next snapshot.
	ip(t, "-n", ns, "link", "add", "vc", "type", "veth", "peer", "name", "vd")
	t.Logf("new link seen after %v", waitFor("vc in a snapshot", func() bool { _, ok := snaps.has("vc"); return ok }))
	// An address change alone is a notification too.
	select {
	case <-snaps.ch:
	default:
	}
	ip(t, "-n", ns, "addr", "add", "198.51.100.11/24", "dev", "va")
	select {
	case <-snaps.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot after an address was added")
	}
	// Deleting the watched link isolates: nothing carries to the others.
	ip(t, "-n", ns, "link", "del", "va")
	t.Logf("isolated %v after the watched link was deleted", expect("isolate"))
	select {
	case e := <-events:
		t.Fatalf("unexpected %s", e)
	case <-time.After(100 * time.Millisecond):
	}
}
