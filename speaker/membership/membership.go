// Package membership tells a speaker which speakers are alive. It is a thin
// wrapper around hashicorp/memberlist (SWIM gossip with Lifeguard's
// refinements) with timers tuned for a LAN, mandatory AES-256 encryption,
// memberlist's log lines routed into a logr.Logger, a coalesced change
// callback, and a Rejoin that returns only once the local view has been
// merged with a peer's.
//
// The election (owner of an IP = a pure function of the live member set)
// lives elsewhere; this package only supplies that set.
package membership

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/memberlist"
)

// DefaultPort is memberlist's customary port, used for both UDP and TCP.
const DefaultPort = 7946

// KeySize is the only accepted key length: AES-256.
const KeySize = 32

var (
	// ErrKey is returned by New when the key is missing or not KeySize
	// bytes long.
	ErrKey = errors.New("membership: the encryption key must be 32 bytes (AES-256)")
	// ErrShutdown is returned by calls made after Shutdown.
	ErrShutdown = errors.New("membership: shut down")
)

// coalesceWindow is how long the notifier waits after the first event of a
// burst before reading the member list. A join's push/pull merges the whole
// remote state in one go and a death arrives with its retransmits, so the
// events of one change land within microseconds of each other; 2 ms folds
// them into one callback without adding noticeable failover latency.
const coalesceWindow = 2 * time.Millisecond

// Config configures a Group. Name and Key are required.
type Config struct {
	// Name identifies this member; it must be unique in the cluster. The
	// speaker uses the Kubernetes node name, which is what the election
	// hashes.
	Name string

	// BindAddr and BindPort are where memberlist listens (UDP and TCP).
	// BindAddr defaults to 0.0.0.0 and BindPort to DefaultPort. Both are
	// ignored when Transport is set.
	BindAddr string
	BindPort int

	// AdvertiseAddr is the address other members reach this one at,
	// typically the node IP. When empty, memberlist uses the bound address,
	// or a private address of the host when bound to 0.0.0.0. It is
	// advertised with BindPort.
	AdvertiseAddr string

	// Peers are host:port addresses of other members, used by Rejoin. A
	// host without a port gets BindPort. The local address may be listed;
	// it is skipped.
	Peers []string

	// Key is the AES-256 key (KeySize bytes). Every member needs the same
	// key; traffic without it is dropped.
	Key []byte

	// Logger receives memberlist's log lines (see NewStdLogger) and this
	// package's own. The zero Logger discards.
	Logger logr.Logger

	// OnChange is called with the sorted names of the alive members
	// (suspected members count as alive, as in memberlist) whenever that
	// set changes. It is called from a single goroutine, never
	// concurrently with itself, and only with a set that differs from the
	// previous call's. Bursts are coalesced within a couple of
	// milliseconds. It is held back until the first Rejoin returns and
	// while any Rejoin runs, so it never reports a view that has not been
	// merged with the cluster's; the view current when Rejoin returns is
	// delivered right after. It must not call Shutdown. May be nil.
	OnChange func(members []string)

	// Transport replaces memberlist's UDP/TCP transport, mainly so tests
	// can cut a member off the network. When set, BindAddr and BindPort
	// are not used for listening.
	Transport memberlist.Transport

	// MACs are the hardware addresses of the interfaces this member
	// announces on, published in its memberlist metadata (up to 85 of
	// them fit).
	MACs []net.HardwareAddr

	// Directory, when set, learns the MACs every member publishes,
	// including this one. May be nil.
	Directory *Directory

	// OnMessage receives the messages other members Send to this one
	// (authenticated and encrypted by the cluster key like the rest of
	// memberlist's traffic). It runs on memberlist's packet handler and
	// must not block. May be nil.
	OnMessage func(msg []byte)

	// Timers override the failure detector's timers; zero fields (and the
	// zero value) keep the tuned ones. The speaker leaves it empty; the
	// scale benchmark compares with LANTimers.
	Timers Timers
}

// Group is this member's handle on the speaker cluster.
//
// All methods are safe for concurrent use. Rejoin calls are serialized.
// Leave and Shutdown may be called once each, in that order, typically on
// SIGTERM; Members, Name and Addr keep working after Shutdown and report
// the last known view.
type Group struct {
	ml       *memberlist.Memberlist
	name     string
	peers    []string
	log      logr.Logger
	onChange func([]string)
	dir      *Directory
	meta     *delegate

	// changed is a one-slot doorbell rung by memberlist's event callbacks.
	// Those run with memberlist's node lock held, so they must neither
	// block nor call back into memberlist; the notifier goroutine does
	// the reading.
	changed chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup

	// rejoinMu serializes Rejoin so that captured merges belong to one
	// Rejoin.
	rejoinMu sync.Mutex

	// lifeMu orders Leave and Shutdown: memberlist panics on Leave after
	// Shutdown.
	lifeMu   sync.Mutex
	shutdown bool

	mu sync.Mutex
	// OnChange is held back while rejoining > 0 or until rejoined: a view
	// that has not been merged with a peer's is not worth reporting.
	rejoining int
	rejoined  bool
	// departed: this memberlist has seen a member die or leave. Its
	// queue may then hold death verdicts the others never got (it was cut
	// off), which Rejoin must let play out.
	departed atomic.Bool
	// addrs remembers the last address of every member ever seen, so that
	// Rejoin can contact members that joined after startup and are not
	// in Config.Peers.
	addrs map[string]string
	// capture, when non-nil, collects the remote member lists of the
	// push/pull merges that happen during one exchange of Rejoin.
	capture *[][]*memberlist.Node
}

// New validates cfg, starts listening and gossiping, and returns the group
// with only this member in it. Call Rejoin next to merge with the peers;
// until it returns OnChange is not called.
func New(cfg Config) (*Group, error) {
	if cfg.Name == "" {
		return nil, errors.New("membership: a node name is required")
	}
	if len(cfg.Key) != KeySize {
		return nil, fmt.Errorf("%w: got %d bytes", ErrKey, len(cfg.Key))
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = "0.0.0.0"
	}
	if cfg.BindPort == 0 {
		cfg.BindPort = DefaultPort
	}

	g := &Group{
		name:     cfg.Name,
		peers:    slices.Clone(cfg.Peers),
		log:      cfg.Logger.WithValues("member", cfg.Name),
		onChange: cfg.OnChange,
		dir:      cfg.Directory,
		changed:  make(chan struct{}, 1),
		done:     make(chan struct{}),
		addrs:    make(map[string]string),
	}

	mc := memberlistConfig(cfg.Timers)
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.BindPort
	mc.Transport = cfg.Transport
	var own *transport
	if cfg.Transport == nil && !(cfg.AdvertiseAddr == "" && isUnspecified(cfg.BindAddr)) {
		// Our own transport (transport.go says why). Bound to 0.0.0.0
		// with nothing to advertise, memberlist's guesses a private
		// address of the host, which only its own transport does.
		t, err := listen(cfg.BindAddr, cfg.BindPort, g.log)
		if err != nil {
			return nil, fmt.Errorf("membership: %w", err)
		}
		own, mc.Transport = t, t
	}
	// Copy the key: memberlist keeps the slice, and the caller may reuse
	// or wipe its buffer.
	mc.SecretKey = slices.Clone(cfg.Key)
	mc.Logger = log.New(&logWriter{log: g.log.WithName("memberlist"), suspected: g.pushSuspicion, refuted: g.pushRefutation}, "", 0)
	mc.Events = (*events)(g)
	mc.Merge = (*merges)(g)
	g.meta = newDelegate(cfg.MACs)
	g.meta.onMessage = cfg.OnMessage
	mc.Delegate = g.meta

	ml, err := memberlist.Create(mc)
	if err != nil {
		if own != nil {
			_ = own.Shutdown()
		}
		return nil, fmt.Errorf("membership: starting memberlist as %q: %w", cfg.Name, err)
	}
	g.ml = ml

	g.wg.Add(1)
	go g.notify()
	g.log.V(1).Info("Membership started", "addr", g.Addr())
	return g, nil
}

// Name is this member's name.
func (g *Group) Name() string { return g.name }

// Addr is the host:port this member advertises to the others.
func (g *Group) Addr() string { return g.ml.LocalNode().Address() }

// Members returns the sorted names of the members this one believes alive,
// itself included (unless it has left). Suspected members count as alive.
func (g *Group) Members() []string {
	nodes := g.ml.Members()
	names := make([]string, 0, len(nodes))
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return names
}

// ErrUnknownMember is returned by Send for a name this member does not
// see alive.
var ErrUnknownMember = errors.New("membership: no such live member")

// Send delivers msg to the member named to, best effort (one UDP packet,
// which must fit memberlist's packet size), for its Config.OnMessage.
func (g *Group) Send(to string, msg []byte) error {
	for _, n := range g.ml.Members() {
		if n.Name == to {
			if err := g.ml.SendBestEffort(n, msg); err != nil {
				return fmt.Errorf("membership: sending to %q: %w", to, err)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: %q", ErrUnknownMember, to)
}

// SetMACs replaces the MACs this member publishes (Config.MACs), for a
// speaker whose interfaces changed, and gossips the new metadata to the
// others, waiting up to timeout for that to start.
func (g *Group) SetMACs(macs []net.HardwareAddr, timeout time.Duration) error {
	c := cloneMACs(macs)
	g.meta.macs.Store(&c)
	if g.isShutdown() {
		return ErrShutdown
	}
	if err := g.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("membership: publishing new MACs: %w", err)
	}
	return nil
}

// HealthScore is memberlist's self-awareness score: 0 when this member
// meets its probing deadlines, higher when it appears degraded (it then
// probes more slowly). Worth exporting as a metric.
func (g *Group) HealthScore() int { return g.ml.GetHealthScore() }

// Leave tells the others that this member is going away, so they drop it at
// once instead of after failure detection. It waits up to timeout for the
// message to be gossiped; on a LAN that takes a few tens of milliseconds.
// Afterwards this member no longer lists itself (nor reports itself through
// OnChange). Call Shutdown next.
func (g *Group) Leave(timeout time.Duration) error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.shutdown {
		return ErrShutdown
	}
	errc := make(chan error, 1)
	go func() { errc <- g.ml.Leave(timeout) }()
	g.pushLeave()
	if err := <-errc; err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// pushSuspicion sends this member's suspicion of a member to the others at
// once. With gossip every 200 ms (gossipInterval) a suspicion would
// otherwise wait for a tick or ride on the next ping or ack, and the
// others need it: a suspicion that another member confirms times out after
// 3 probe intervals, one that nobody confirms after 12 (suspicionMult).
// Measured in the lab, cable pulled: without this, 200 ms gossip made
// failover 150 ms slower at the median than 50 ms gossip. memberlist logs
// the suspicion just before it queues the broadcast, hence the short wait;
// a ping carries every queued broadcast.
func (g *Group) pushSuspicion(about string) {
	go func() {
		time.Sleep(2 * time.Millisecond)
		if g.isShutdown() {
			return
		}
		// As many as a gossip tick would reach (gossipNodes), at random:
		// in a large cluster every suspicion pinging every member would
		// be a storm, and gossip spreads it from there.
		others := slices.DeleteFunc(g.ml.Members(), func(n *memberlist.Node) bool { return n.Name == g.name || n.Name == about })
		rand.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
		g.ping(others[:min(len(others), gossipNodes)])
	}()
}

// pushRefutation sends this member's refutation of a suspicion about
// itself at once, for the same reason as pushSuspicion: accusations that
// travel at once while the answers wait for a 200 ms gossip tick turn a
// member that was only slow (a loaded node) into a dead one. The lab
// showed it: with suspicions pushed and refutations not, a loaded node
// was declared dead and its address moved.
func (g *Group) pushRefutation() {
	g.pushSuspicion("")
}

// ping sends each node a ping and does not wait for the acks: what counts
// is that a ping carries every broadcast queued at that moment.
func (g *Group) ping(nodes []*memberlist.Node) {
	for _, n := range nodes {
		addr := &net.UDPAddr{IP: n.Addr, Port: int(n.Port)}
		go func() { _, _ = g.ml.Ping(n.Name, addr) }()
	}
}

// pushLeave sends the leave out at once. memberlist queues it as a
// broadcast that goes out with the next gossip tick (every 200 ms, see
// gossipInterval) or riding on the next ping or ack this member sends;
// a graceful stop (a rolling update) should hand its addresses over in
// milliseconds, not in a tick. A ping to every other member carries the
// queued broadcast right away, and the acks are not needed.
func (g *Group) pushLeave() {
	// Leave queues the broadcast and marks this member left in one step;
	// wait for that, briefly (a member that left is not among Members).
	deadline := time.Now().Add(50 * time.Millisecond)
	var others []*memberlist.Node
	for {
		members := g.ml.Members()
		if !slices.ContainsFunc(members, func(n *memberlist.Node) bool { return n.Name == g.name }) {
			others = members
			break
		}
		if time.Now().After(deadline) {
			return // the tick or the next ack will carry it
		}
		time.Sleep(time.Millisecond)
	}
	g.ping(others)
}

// Shutdown stops gossiping and listening and waits for OnChange to return
// if it is running. Without a prior Leave the others notice only through
// failure detection, like a crash. Calling it again does nothing.
func (g *Group) Shutdown() error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.shutdown {
		return nil
	}
	g.shutdown = true
	err := g.ml.Shutdown()
	close(g.done)
	g.wg.Wait()
	if err != nil {
		return fmt.Errorf("membership: shutdown: %w", err)
	}
	return nil
}

func (g *Group) isShutdown() bool {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	return g.shutdown
}

// Rejoin exchanges full state (memberlist's push/pull) with the peers until
// this member and one peer agree: the peer lists this member as alive and
// this member's alive set equals the peer's. It returns nil then, or the
// context's error (with the last failure) if that never happens.
//
// Call it after New, and whenever this member may have been cut off (its
// link came back). After a cut both sides have declared each other dead
// and ignore each other's alive messages until refuted; a single push/pull
// only triggers the refutations, so Rejoin repeats the exchange until they
// have gone through. Until it returns, the local view may be stale (others
// still look dead), which is why OnChange is held back meanwhile.
//
// Peers are Config.Peers plus the last known address of every member seen
// so far, minus this member. With none, Rejoin returns nil at once: there
// is nobody to merge with.
func (g *Group) Rejoin(ctx context.Context) error {
	if g.isShutdown() {
		return ErrShutdown
	}
	g.rejoinMu.Lock()
	defer g.rejoinMu.Unlock()

	g.mu.Lock()
	g.rejoining++
	g.mu.Unlock()
	defer g.release()

	peers := g.candidates()
	if len(peers) == 0 {
		g.log.V(1).Info("No peers to rejoin; alone")
		return nil
	}

	const (
		// After an exchange that worked but left the views apart, the
		// refutations it triggered need a gossip tick or two.
		settleWait = 10 * time.Millisecond
		// After a round where no peer answered, back off up to a second.
		firstFailWait = 50 * time.Millisecond
		maxFailWait   = time.Second
	)
	failWait := firstFailWait
	var lastErr error
	preferred := ""
	// A group that declared others dead while it was cut off still has
	// those verdicts queued; the others refute them when they arrive, but
	// a stale one may reach a third member first, and for a moment views
	// disagree again after they agreed. Such a group confirms an agreement
	// once more two gossip ticks later. A fresh group (the speaker starts
	// one after every isolation) has nothing queued and returns at once.
	confirm := g.departed.Load()
	for round := 1; ; round++ {
		// Start with the peer that answered last time; the views converge
		// fastest by repeating the exchange with the same member.
		order := slices.Clone(peers)
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		if i := slices.Index(order, preferred); i > 0 {
			order[0], order[i] = order[i], order[0]
		}

		answered, confirming := false, false
		for _, peer := range order {
			if ctx.Err() != nil {
				break
			}
			if g.isShutdown() {
				return ErrShutdown
			}
			remotes, err := g.exchange(peer)
			if err != nil {
				lastErr = err
				continue
			}
			answered, preferred = true, peer
			if diff := g.disagreement(remotes); diff != "" {
				lastErr = fmt.Errorf("exchanged state with %s but %s", peer, diff)
				break
			}
			if confirm {
				confirm, confirming = false, true
				lastErr = fmt.Errorf("agreed with %s once, not yet confirmed", peer)
				break
			}
			g.log.V(1).Info("Rejoined", "peer", peer, "rounds", round, "members", g.Members())
			return nil
		}

		wait := settleWait
		if confirming {
			wait = 2 * gossipInterval
		}
		if !answered {
			wait = failWait
			failWait = min(2*failWait, maxFailWait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("membership: rejoin: %w (last: %v)", ctx.Err(), lastErr)
		case <-t.C:
		}
	}
}

// exchange does one push/pull with peer and returns the member lists that
// were merged meanwhile: the peer's, and, rarely, that of a member joining
// us at the same moment (NotifyMerge cannot tell them apart; disagreement
// requires all to agree, which only costs another round).
func (g *Group) exchange(peer string) ([][]*memberlist.Node, error) {
	var captured [][]*memberlist.Node
	g.mu.Lock()
	g.capture = &captured
	g.mu.Unlock()
	_, err := g.ml.Join([]string{peer})
	g.mu.Lock()
	g.capture = nil
	g.mu.Unlock()
	if err != nil {
		// memberlist returns a multierror whose text spans lines; with a
		// single peer there is a single error worth keeping.
		var multi interface{ WrappedErrors() []error }
		if errors.As(err, &multi) && len(multi.WrappedErrors()) == 1 {
			err = multi.WrappedErrors()[0]
		}
		return nil, err
	}
	return captured, nil
}

// disagreement explains why the merged views do not yet agree, or returns
// "" when they do.
func (g *Group) disagreement(remotes [][]*memberlist.Node) string {
	if len(remotes) == 0 {
		return "no remote state was merged"
	}
	ours := g.Members()
	for _, nodes := range remotes {
		var theirs []string
		for _, n := range nodes {
			if n.State == memberlist.StateAlive || n.State == memberlist.StateSuspect {
				theirs = append(theirs, n.Name)
			}
		}
		slices.Sort(theirs)
		if _, found := slices.BinarySearch(theirs, g.name); !found {
			return "the peer does not see us alive yet"
		}
		if !slices.Equal(ours, theirs) {
			return fmt.Sprintf("views differ: ours %v, theirs %v", ours, theirs)
		}
	}
	return ""
}

// candidates lists the addresses Rejoin may contact: the configured peers
// and every member address seen so far, without duplicates and without our
// own address (a push/pull with ourselves would "agree" trivially).
func (g *Group) candidates() []string {
	self := g.Addr()
	selfHost, selfPort, _ := net.SplitHostPort(self)
	isSelf := func(addr string) bool {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			// memberlist accepts a bare host and adds the bind port.
			host, port = addr, strconv.Itoa(int(g.ml.LocalNode().Port))
		}
		if port != selfPort {
			return false
		}
		ip := net.ParseIP(host)
		return host == selfHost || (ip != nil && ip.Equal(net.ParseIP(selfHost)))
	}

	var out []string
	add := func(addr string) {
		if addr != "" && !isSelf(addr) && !slices.Contains(out, addr) {
			out = append(out, addr)
		}
	}
	for _, p := range g.peers {
		add(p)
	}
	g.mu.Lock()
	for name, addr := range g.addrs {
		if name != g.name {
			add(addr)
		}
	}
	g.mu.Unlock()
	return out
}

// release ends a Rejoin's hold on OnChange, whatever its outcome (a failed
// Rejoin leaves this member alone, which is then its honest view), and
// rings the doorbell so the current view is delivered.
func (g *Group) release() {
	g.mu.Lock()
	g.rejoining--
	g.rejoined = true
	g.mu.Unlock()
	g.ring()
}

func (g *Group) ring() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// notify runs the OnChange callback. It is the only goroutine that calls
// it, which is what makes the "never concurrently" promise hold.
func (g *Group) notify() {
	defer g.wg.Done()
	var last []string
	delivered := false
	for {
		select {
		case <-g.done:
			return
		case <-g.changed:
		}
		t := time.NewTimer(coalesceWindow)
		select {
		case <-g.done:
			t.Stop()
			return
		case <-t.C:
		}
		// Events that rang during the window are covered by the read
		// below.
		select {
		case <-g.changed:
		default:
		}

		g.mu.Lock()
		held := g.rejoining > 0 || !g.rejoined
		g.mu.Unlock()
		if held || g.onChange == nil {
			continue
		}
		members := g.Members()
		if delivered && slices.Equal(members, last) {
			continue
		}
		last, delivered = members, true
		g.onChange(members)
	}
}

// events receives memberlist's membership events. memberlist calls these
// with its node lock held.
type events Group

func (e *events) NotifyJoin(n *memberlist.Node) {
	(*Group)(e).remember(n)
	(*Group)(e).ring()
}

func (e *events) NotifyLeave(*memberlist.Node) {
	(*Group)(e).departed.Store(true)
	(*Group)(e).ring()
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	(*Group)(e).remember(n)
	(*Group)(e).ring()
}

func (g *Group) remember(n *memberlist.Node) {
	g.mu.Lock()
	g.addrs[n.Name] = n.Address()
	g.mu.Unlock()
	g.dir.learn(n.Name, n.Meta)
}

// merges lets Rejoin see the remote member list of a join's push/pull,
// including the states memberlist does not otherwise expose (whether the
// peer still thinks we are dead).
type merges Group

func (m *merges) NotifyMerge(peers []*memberlist.Node) error {
	g := (*Group)(m)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.capture != nil {
		copied := make([]*memberlist.Node, len(peers))
		for i, p := range peers {
			n := *p
			copied[i] = &n
		}
		*g.capture = append(*g.capture, copied)
	}
	return nil
}

func isUnspecified(addr string) bool {
	a, err := netip.ParseAddr(addr)
	return err == nil && a.IsUnspecified()
}
