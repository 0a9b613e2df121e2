package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/hashicorp/memberlist"

	"github.com/ironlb/ironlb/speaker/membership"
)

// The cluster runs in this process on memberlist's MockNetwork: the real
// membership.Group, the real memberlist with its AES-256 encryption,
// probes, suspicion and gossip; only the sockets are replaced by Go
// channels. Each node's transport drains its mailbox into a bounded queue
// and drops what does not fit, like a UDP socket buffer, so a slow
// receiver never blocks its senders (MockTransport alone would).
const (
	packetQueue = 1024
	streamQueue = 64
)

var errCut = errors.New("node is dead")

// debugLog prints every memberlist line (SCALE_DEBUG=1).
var debugLog = os.Getenv("SCALE_DEBUG") != ""

// view is one OnChange call: when, and which members, as a bit set over
// node indexes.
type view struct {
	at   time.Time
	live bitset
}

// simNode is one speaker's membership. Its mock address survives kills, so
// a node returns at the same address, as a restarted speaker does.
type simNode struct {
	idx   int
	name  string
	inner *memberlist.MockTransport
	addr  string

	cur   atomic.Pointer[incarnation]
	group *membership.Group // owned by the cluster's driver goroutine

	sent       atomic.Int64 // bytes sent over packets and streams, all incarnations
	dropped    atomic.Int64 // packets dropped because the queue was full
	suspicions atomic.Int64 // "Suspect x has failed" raised by this node
	declared   atomic.Int64 // "Marking x as failed" by this node
	refuted    atomic.Int64 // suspicions or deaths about this node it refuted

	mu    sync.Mutex
	views []view
}

func (n *simNode) lastView() (view, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.views) == 0 {
		return view{}, false
	}
	return n.views[len(n.views)-1], true
}

func (n *simNode) viewsCopy() []view {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]view(nil), n.views...)
}

// forward runs for the life of the process: memberlist's MockTransport
// blocks a sender until the receiver takes the packet, so somebody must
// always be taking it, dead node or not.
func (n *simNode) forward() {
	for {
		select {
		case p := <-n.inner.PacketCh():
			inc := n.cur.Load()
			if inc == nil || inc.cut.Load() {
				continue
			}
			select {
			case inc.packets <- p:
			default:
				n.dropped.Add(1)
			}
		case c := <-n.inner.StreamCh():
			inc := n.cur.Load()
			if inc == nil || inc.cut.Load() {
				_ = c.Close()
				continue
			}
			select {
			case inc.streams <- &countingConn{Conn: c, inc: inc}:
			default:
				_ = c.Close()
			}
		}
	}
}

// incarnation is one life of a node: the memberlist.Transport a Group gets.
// Killing it makes it drop everything in both directions at once, with no
// Leave: what the others see of a SIGKILLed speaker or a dead host.
type incarnation struct {
	node    *simNode
	packets chan *memberlist.Packet
	streams chan net.Conn
	cut     atomic.Bool
}

var _ memberlist.Transport = (*incarnation)(nil)

func (i *incarnation) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return i.node.inner.FinalAdvertiseAddr("", 0)
}

func (i *incarnation) WriteTo(b []byte, addr string) (time.Time, error) {
	if i.cut.Load() {
		return time.Now(), nil
	}
	i.node.sent.Add(int64(len(b)))
	return i.node.inner.WriteTo(b, addr)
}

func (i *incarnation) PacketCh() <-chan *memberlist.Packet { return i.packets }

func (i *incarnation) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if i.cut.Load() {
		return nil, errCut
	}
	c, err := i.node.inner.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, inc: i}, nil
}

func (i *incarnation) StreamCh() <-chan net.Conn { return i.streams }

func (i *incarnation) Shutdown() error {
	i.cut.Store(true)
	return nil
}

// countingConn counts the bytes a node writes on a stream (push/pull).
type countingConn struct {
	net.Conn
	inc *incarnation
}

func (c *countingConn) Write(b []byte) (int, error) {
	if c.inc.cut.Load() {
		_ = c.Conn.Close()
		return 0, errCut
	}
	n, err := c.Conn.Write(b)
	c.inc.node.sent.Add(int64(n))
	return n, err
}

func (c *countingConn) Read(b []byte) (int, error) {
	if c.inc.cut.Load() {
		_ = c.Conn.Close()
		return 0, errCut
	}
	return c.Conn.Read(b)
}

// cluster is N simulated speakers. Its methods are called from one
// goroutine (the benchmark's driver).
type cluster struct {
	nodes  []*simNode
	key    []byte
	timers membership.Timers
	index  map[string]int
	// dilate stretches the harness's own waits by the same factor as the
	// timers (see dilateTimers).
	dilate time.Duration
	// progress, when set, hears how many members have joined.
	progress func(joined int)
}

func newCluster(n int, timers membership.Timers, dilate int) *cluster {
	c := &cluster{key: make([]byte, membership.KeySize), timers: dilateTimers(timers, dilate), dilate: time.Duration(dilate), index: map[string]int{}}
	for i := range c.key {
		c.key[i] = byte(i*7 + 1)
	}
	// Every transport is made before any traffic: MockNetwork's maps are
	// not safe for concurrent writes and reads.
	mn := &memberlist.MockNetwork{}
	for i := range n {
		name := nodeName(i)
		t := mn.NewTransport(name)
		ip, port, _ := t.FinalAdvertiseAddr("", 0)
		sn := &simNode{idx: i, name: name, inner: t, addr: net.JoinHostPort(ip.String(), fmt.Sprint(port))}
		go sn.forward()
		c.nodes = append(c.nodes, sn)
		c.index[name] = i
	}
	return c
}

func nodeName(i int) string { return fmt.Sprintf("node-%03d", i) }

// countingLogger counts the memberlist lines that tell a failure-detector
// story; everything else is discarded.
func countingLogger(n *simNode) logr.Logger {
	return funcr.New(func(prefix, args string) {
		if debugLog {
			fmt.Fprintln(os.Stderr, time.Now().Format("15:04:05.000"), n.name, prefix, args)
		}
		switch {
		case strings.Contains(args, "has failed, no acks received"):
			n.suspicions.Add(1)
		case strings.Contains(args, "suspect timeout reached"):
			n.declared.Add(1)
		case strings.Contains(args, "Refuting a suspect"), strings.Contains(args, "Refuting a dead"):
			n.refuted.Add(1)
		}
	}, funcr.Options{Verbosity: 1})
}

// start gives node i a fresh incarnation and group and merges it with the
// peers (membership.Group.Rejoin, as the speaker does at start and after a
// reconnect).
func (c *cluster) start(ctx context.Context, i int, peers []string) error {
	n := c.nodes[i]
	inc := &incarnation{node: n, packets: make(chan *memberlist.Packet, packetQueue), streams: make(chan net.Conn, streamQueue)}
	n.cur.Store(inc)
	g, err := membership.New(membership.Config{
		Name:      n.name,
		Key:       c.key,
		Transport: inc,
		Peers:     peers,
		Logger:    countingLogger(n),
		Timers:    c.timers,
		OnChange: func(members []string) {
			v := view{at: time.Now(), live: newBitset(len(c.nodes))}
			for _, m := range members {
				if j, ok := c.index[m]; ok {
					v.live.set(j)
				}
			}
			n.mu.Lock()
			n.views = append(n.views, v)
			n.mu.Unlock()
		},
	})
	if err != nil {
		return fmt.Errorf("starting %s: %w", n.name, err)
	}
	n.group = g
	if err := g.Rejoin(ctx); err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	return nil
}

// kill stops node i answering at once, without a Leave, and returns the
// instant it went silent.
func (c *cluster) kill(i int) time.Time {
	n := c.nodes[i]
	at := time.Now()
	if inc := n.cur.Load(); inc != nil {
		inc.cut.Store(true)
	}
	g := n.group
	n.group = nil
	// Shutdown only frees the goroutines; the node is silent already.
	go func() { _ = g.Shutdown() }()
	return at
}

// peersFor lists up to three random live members' addresses for node i
// to join: spreading the joins' push/pulls over the cluster, as a speaker
// does with its shuffled peer list, instead of hammering the first nodes.
func (c *cluster) peersFor(i int, alive bitset) []string {
	var cands []string
	for j := range c.nodes {
		if j != i && alive.has(j) {
			cands = append(cands, c.nodes[j].addr)
		}
	}
	rand.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	return cands[:min(3, len(cands))]
}

// boot starts every node, a few at a time, and waits until every node's
// view is the whole cluster.
func (c *cluster) boot(ctx context.Context) error {
	all := newBitset(len(c.nodes))
	for i := range c.nodes {
		all.set(i)
	}
	if err := c.start(ctx, 0, nil); err != nil {
		return err
	}
	joined := newBitset(len(c.nodes))
	joined.set(0)
	// A few joins at a time: 250 members joining at once make a storm of
	// alive broadcasts that, with every member sharing this process's two
	// cores, starves probes into false suspicions; a DaemonSet rollout
	// starts speakers a few at a time too.
	const parallel = 1
	joinPause := 100 * time.Millisecond * c.dilate
	for lo := 1; lo < len(c.nodes); lo += parallel {
		hi := min(lo+parallel, len(c.nodes))
		var wg sync.WaitGroup
		errs := make([]error, hi-lo)
		for i := lo; i < hi; i++ {
			peers := c.peersFor(i, joined)
			wg.Add(1)
			go func() {
				defer wg.Done()
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second*c.dilate)
				defer cancel()
				errs[i-lo] = c.start(rctx, i, peers)
			}()
		}
		wg.Wait()
		// Let the join's broadcast spread before the next one.
		if err := sleep(ctx, joinPause); err != nil {
			return err
		}
		if c.progress != nil && hi%25 == 0 {
			c.progress(hi)
		}
		for i := lo; i < hi; i++ {
			if errs[i-lo] != nil && c.nodes[i].group == nil {
				return fmt.Errorf("starting %s: %w", c.nodes[i].name, errs[i-lo])
			}
			// A Rejoin that timed out leaves the member running on its
			// own view, as in the speaker; waitViews below judges.
			joined.set(i)
		}
	}
	return c.waitViews(ctx, all, all, 2*time.Minute*c.dilate)
}

// waitViews waits until every node in who reports exactly want.
func (c *cluster) waitViews(ctx context.Context, who, want bitset, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pending := 0
		for i, n := range c.nodes {
			if !who.has(i) {
				continue
			}
			if v, ok := n.lastView(); !ok || !v.live.equal(want) {
				pending++
			}
		}
		if pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d nodes do not see the expected %d members after %v", pending, want.count(), timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitCalm waits until no member has raised a suspicion for quiet and
// every member sees everyone, so that a measurement starts from a settled
// cluster rather than from the tail of the join storm.
func (c *cluster) waitCalm(ctx context.Context, all bitset, quiet, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last, since := c.counters().suspicions, time.Now()
	for {
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
		if s := c.counters().suspicions; s != last {
			last, since = s, time.Now()
		}
		if time.Since(since) >= quiet && c.waitViews(ctx, all, all, 0) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still raising suspicions (or views differ) after %v", timeout)
		}
	}
}

// shutdown stops every node's group.
func (c *cluster) shutdown() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n.group == nil {
			continue
		}
		if inc := n.cur.Load(); inc != nil {
			inc.cut.Store(true)
		}
		g := n.group
		n.group = nil
		wg.Add(1)
		go func() { defer wg.Done(); _ = g.Shutdown() }()
	}
	wg.Wait()
}

func (c *cluster) sentBytes() int64 {
	var s int64
	for _, n := range c.nodes {
		s += n.sent.Load()
	}
	return s
}

type counters struct{ suspicions, declared, refuted, dropped int64 }

func (c *cluster) counters() counters {
	var k counters
	for _, n := range c.nodes {
		k.suspicions += n.suspicions.Load()
		k.declared += n.declared.Load()
		k.refuted += n.refuted.Load()
		k.dropped += n.dropped.Load()
	}
	return k
}
