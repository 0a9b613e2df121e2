//go:build integration

package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
)

// cutTransport is memberlist's NetTransport on 127.0.0.1 with a switch that
// cuts the member off: while cut, every packet and stream in either
// direction is dropped, as if its link were down, while the process lives
// on.
type cutTransport struct {
	inner   *memberlist.NetTransport
	cut     atomic.Bool
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
}

var _ memberlist.Transport = (*cutTransport)(nil)

func newCutTransport(t testing.TB, logger logr.Logger) *cutTransport {
	t.Helper()
	return newCutTransportAt(t, logger, 0)
}

// newCutTransportAt binds port (0: any free one).
func newCutTransportAt(t testing.TB, logger logr.Logger, port int) *cutTransport {
	t.Helper()
	var nt *memberlist.NetTransport
	var err error
	// Port 0 picks a free TCP port, which may be taken for UDP; retry like
	// memberlist itself does.
	for range 10 {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{"127.0.0.1"},
			BindPort:  port,
			Logger:    NewStdLogger(logger),
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("NetTransport: %v", err)
	}
	ct := &cutTransport{
		inner:   nt,
		packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
	}
	go ct.forwardPackets()
	go ct.forwardStreams()
	t.Cleanup(func() { _ = ct.Shutdown() })
	return ct
}

func (c *cutTransport) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.inner.GetAutoBindPort()))
}

func (c *cutTransport) forwardPackets() {
	for {
		select {
		case p := <-c.inner.PacketCh():
			if c.cut.Load() {
				continue
			}
			select {
			case c.packets <- p:
			case <-c.done:
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *cutTransport) forwardStreams() {
	for {
		select {
		case conn := <-c.inner.StreamCh():
			if c.cut.Load() {
				_ = conn.Close()
				continue
			}
			select {
			case c.streams <- conn:
			case <-c.done:
				_ = conn.Close()
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *cutTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return c.inner.FinalAdvertiseAddr(ip, port)
}

func (c *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if c.cut.Load() {
		// A packet into a dead link is lost silently.
		return time.Now(), nil
	}
	return c.inner.WriteTo(b, addr)
}

func (c *cutTransport) PacketCh() <-chan *memberlist.Packet { return c.packets }

func (c *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if c.cut.Load() {
		return nil, errors.New("cut off")
	}
	return c.inner.DialTimeout(addr, timeout)
}

func (c *cutTransport) StreamCh() <-chan net.Conn { return c.streams }

func (c *cutTransport) Shutdown() error {
	var err error
	c.once.Do(func() {
		// The inner listeners block handing over packets until someone
		// reads them, so keep forwarding until they are gone.
		err = c.inner.Shutdown()
		close(c.done)
	})
	return err
}

// change is one OnChange call.
type change struct {
	at      time.Time
	members []string
}

func (c change) String() string {
	return c.at.Format("15:04:05.000") + " " + fmt.Sprint(c.members)
}

// recorder collects OnChange calls and checks they never overlap.
type recorder struct {
	t       testing.TB
	mu      sync.Mutex
	changes []change
	bell    chan struct{}
	inside  atomic.Int32
}

func newRecorder(t testing.TB) *recorder {
	return &recorder{t: t, bell: make(chan struct{}, 1)}
}

func (r *recorder) onChange(members []string) {
	if r.inside.Add(1) != 1 {
		r.t.Errorf("OnChange called concurrently")
	}
	defer r.inside.Add(-1)
	now := time.Now()
	if !slices.IsSorted(members) {
		r.t.Errorf("OnChange got unsorted members %v", members)
	}
	r.mu.Lock()
	r.changes = append(r.changes, change{at: now, members: slices.Clone(members)})
	r.mu.Unlock()
	select {
	case r.bell <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.changes)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changes)
}

// waitFor waits until a change from index `from` on satisfies ok and
// returns it.
func (r *recorder) waitFor(from int, timeout time.Duration, ok func([]string) bool) (change, bool) {
	deadline := time.After(timeout)
	for {
		for i, c := range r.snapshot() {
			if i >= from && ok(c.members) {
				return c, true
			}
		}
		select {
		case <-r.bell:
		case <-deadline:
			return change{}, false
		}
	}
}

// member is a Group on a cuttable loopback transport with a recorder.
type member struct {
	*Group
	net *cutTransport
	rec *recorder
}

// testLogger returns a logger that counts memberlist's notable lines and
// prints everything when IRONLB_TEST_LOG is set (at that verbosity).
func testLogger(t testing.TB, counts *lineCounts) logr.Logger {
	v := -1
	if s := os.Getenv("IRONLB_TEST_LOG"); s != "" {
		v, _ = strconv.Atoi(s)
	}
	return logr.New(&countingSink{counts: counts, verbosity: v})
}

// lineCounts counts log lines that matter for flapping: suspicions raised,
// refutations, and members declared failed.
type lineCounts struct {
	suspect, refute, failed, errors atomic.Int64
}

func (c *lineCounts) String() string {
	if c == nil {
		return ""
	}
	return fmt.Sprintf("suspicions=%d refutations=%d declared-failed=%d errors=%d",
		c.suspect.Load(), c.refute.Load(), c.failed.Load(), c.errors.Load())
}

type countingSink struct {
	counts    *lineCounts
	verbosity int
	name      string
	values    []any
}

func (s *countingSink) Init(logr.RuntimeInfo) {}

func (s *countingSink) Enabled(int) bool { return true }

func (s *countingSink) Info(level int, msg string, kv ...any) {
	if s.counts != nil {
		switch {
		case strings.HasPrefix(msg, "Suspect "):
			s.counts.suspect.Add(1)
		case strings.HasPrefix(msg, "Refuting"):
			s.counts.refute.Add(1)
		case strings.HasPrefix(msg, "Marking "):
			s.counts.failed.Add(1)
		}
	}
	if level <= s.verbosity {
		fmt.Fprintf(os.Stderr, "%s %s V(%d) %s %v %v\n", time.Now().Format("15:04:05.000"), s.name, level, msg, s.values, kv)
	}
}

func (s *countingSink) Error(err error, msg string, kv ...any) {
	if s.counts != nil {
		s.counts.errors.Add(1)
	}
	if s.verbosity >= 0 {
		fmt.Fprintf(os.Stderr, "%s %s ERROR %s %v %v %v\n", time.Now().Format("15:04:05.000"), s.name, msg, err, s.values, kv)
	}
}

func (s *countingSink) WithValues(kv ...any) logr.LogSink {
	c := *s
	c.values = append(slices.Clone(s.values), kv...)
	return &c
}

func (s *countingSink) WithName(name string) logr.LogSink {
	c := *s
	if c.name != "" {
		name = c.name + "/" + name
	}
	c.name = name
	return &c
}

// startCluster starts n members named a, b, c, … with the same key on
// cuttable loopback transports, each configured with every member's
// address as a peer, rejoins them all at once and waits until every member
// reports all n.
func startCluster(t testing.TB, n int, counts *lineCounts) []*member {
	t.Helper()
	logger := testLogger(t, counts)
	nets := make([]*cutTransport, n)
	var peers []string
	for i := range nets {
		nets[i] = newCutTransport(t, logger)
		peers = append(peers, nets[i].addr())
	}
	members := make([]*member, n)
	for i := range members {
		members[i] = newMember(t, string(rune('a'+i)), Config{Peers: peers, Logger: logger, Transport: nets[i]})
		members[i].net = nets[i]
	}
	rejoinAll(t, members)
	return members
}

// startPlainCluster is startCluster on memberlist's own UDP/TCP transport,
// as in production: no extra goroutine between the socket and memberlist.
// Members cannot be cut off.
func startPlainCluster(t testing.TB, n int, counts *lineCounts) []*member {
	t.Helper()
	logger := testLogger(t, counts)
	members := make([]*member, n)
	var peers []string
	for i := range members {
		var err error
		// A free TCP port may be taken for UDP; try a few.
		for range 10 {
			cfg := Config{
				BindAddr:      "127.0.0.1",
				BindPort:      freePort(t),
				AdvertiseAddr: "127.0.0.1",
				Peers:         peers,
				Logger:        logger,
			}
			members[i], err = tryNewMember(t, string(rune('a'+i)), cfg)
			if err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, members[i].Addr())
	}
	rejoinAll(t, members)
	return members
}

func newMember(t testing.TB, name string, cfg Config) *member {
	t.Helper()
	m, err := tryNewMember(t, name, cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	return m
}

func tryNewMember(t testing.TB, name string, cfg Config) (*member, error) {
	rec := newRecorder(t)
	cfg.Name = name
	cfg.OnChange = rec.onChange
	if cfg.Key == nil {
		cfg.Key = testKey(1)
	}
	g, err := New(cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return &member{Group: g, rec: rec}, nil
}

// rejoinAll rejoins all members concurrently and waits until each reports
// all of them.
func rejoinAll(t testing.TB, members []*member) {
	t.Helper()
	// Generous: this is setup, not a measurement, and `go test ./...`
	// runs other packages' tests on the same cores meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, len(members))
	for _, m := range members {
		go func() { errs <- m.Rejoin(ctx) }()
	}
	for range members {
		if err := <-errs; err != nil {
			t.Fatalf("Rejoin: %v", err)
		}
	}
	all := names(members)
	for _, m := range members {
		if _, ok := m.rec.waitFor(0, 15*time.Second, equalTo(all)); !ok {
			t.Fatalf("%s never reported %v; changes: %v", m.Name(), all, m.rec.snapshot())
		}
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func equalTo(want []string) func([]string) bool {
	return func(got []string) bool { return slices.Equal(got, want) }
}

func without(name string) func([]string) bool {
	return func(got []string) bool { return !slices.Contains(got, name) }
}

func names(ms []*member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name())
	}
	return out
}

// durations summarizes measured times.
type durations []time.Duration

func (d durations) String() string {
	if len(d) == 0 {
		return "no samples"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	round := func(x time.Duration) time.Duration { return x.Round(time.Millisecond) }
	median := s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("n=%d min=%v median=%v max=%v all=%v",
		len(s), round(s[0]), round(median), round(s[len(s)-1]), roundAll(s))
}

func roundAll(s []time.Duration) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, x := range s {
		out[i] = x.Round(time.Millisecond)
	}
	return out
}
