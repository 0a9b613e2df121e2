package membership

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Member is this node's membership across cable pulls.
//
// While cut off, a member concludes that everyone else is dead. Those
// verdicts must not reach the others when the link returns: a healthy
// node that believed them would announce for a moment. So Isolate drops
// the group with its state and gossip queue, and Reconnect starts a fresh
// one (a new incarnation) and merges it with the others before it
// returns, that is before the caller may announce again.
type Member struct {
	cfg Config
	// RejoinTimeout bounds each merge with the peers (default 10 s);
	// past it the member goes on alone, which is then its honest view.
	RejoinTimeout time.Duration
	// newTransport, when set, gives each new group its transport (tests:
	// a transport cannot be reused after its group shut down).
	newTransport func() memberlist.Transport

	mu sync.Mutex
	g  *Group // nil while isolated
	// last is the most recent group, kept after Isolate: its member
	// addresses help the next one find members that joined after start.
	last *Group
}

// NewMember starts the first group; call Rejoin next.
func NewMember(cfg Config) (*Member, error) {
	m := &Member{cfg: cfg}
	g, err := m.start(nil)
	if err != nil {
		return nil, err
	}
	m.g, m.last = g, g
	return m, nil
}

func (m *Member) start(prev *Group) (*Group, error) {
	cfg := m.cfg
	if m.newTransport != nil {
		cfg.Transport = m.newTransport()
	}
	if prev != nil {
		// Members seen by the previous group, beyond the configured
		// peers: nodes that joined after this speaker started.
		cfg.Peers = append(append([]string(nil), cfg.Peers...), prev.candidates()...)
	}
	return New(cfg)
}

// Rejoin merges the current group with its peers; it logs and returns the
// error when that fails within RejoinTimeout, and the member goes on
// alone. It does nothing while isolated.
func (m *Member) Rejoin(ctx context.Context) error {
	m.mu.Lock()
	g := m.g
	m.mu.Unlock()
	if g == nil {
		return nil
	}
	d := m.RejoinTimeout
	if d <= 0 {
		d = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := g.Rejoin(ctx)
	if err != nil {
		g.log.Info("Could not merge with other speakers; going on alone", "err", err.Error())
	}
	return err
}

// Isolate shuts the group down without a Leave: the others have declared
// this member dead already or soon will. Calling it again does nothing.
func (m *Member) Isolate() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.g != nil {
		_ = m.g.Shutdown()
		m.g = nil
	}
}

// Reconnect starts a fresh group after Isolate and merges it with the
// others (see Rejoin: a failed merge is not an error). It returns an error
// only when the group cannot start, for instance while its port is still
// held; the caller stays isolated and tries again. Without a prior Isolate
// it only rejoins.
func (m *Member) Reconnect(ctx context.Context) error {
	m.mu.Lock()
	if m.g == nil {
		g, err := m.start(m.last)
		if err != nil {
			m.mu.Unlock()
			return err
		}
		m.g, m.last = g, g
	}
	m.mu.Unlock()
	_ = m.Rejoin(ctx)
	return nil
}

// Send delivers msg to the member named to (Group.Send); while isolated
// there is nobody to reach.
func (m *Member) Send(to string, msg []byte) error {
	m.mu.Lock()
	g := m.g
	m.mu.Unlock()
	if g == nil {
		return fmt.Errorf("%w: %q (this member is isolated)", ErrUnknownMember, to)
	}
	return g.Send(to, msg)
}

// Members is the current view; nil while isolated.
func (m *Member) Members() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.g == nil {
		return nil
	}
	return m.g.Members()
}

// Leave announces this member's departure (SIGTERM), then Shutdown stops
// it. While isolated there is nobody to tell.
func (m *Member) Leave(timeout time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.g == nil {
		return nil
	}
	return m.g.Leave(timeout)
}

// Shutdown stops the current group, if any.
func (m *Member) Shutdown() {
	m.Isolate()
}

// SetMACs publishes this node's interface MACs anew (its interfaces
// changed) and keeps them for the groups started after a reconnect.
func (m *Member) SetMACs(macs []net.HardwareAddr, timeout time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg.MACs = cloneMACs(macs)
	if m.g == nil {
		return nil
	}
	return m.g.SetMACs(macs, timeout)
}
