package speaker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
)

// Announcements that verify themselves: every speaker periodically asks
// the LAN who answers for a sample of the addresses other nodes own, the
// way a client would (one ARP request or Neighbor Solicitation), and
// checks that the owner's MAC answers. When nobody answers, or only other
// MACs do, it raises a Warning Event (NotAnswering / WrongAnnouncer) on
// the Services, counts it, and tells the owner through memberlist to
// re-announce the address and reopen its responders. The owner never
// trusts that message for more: it re-announces only what it owns.
//
// A check that fails is asked once more before anything is reported, so
// that a reply lost or delayed on a busy node is not an alarm; an address
// whose owner changed within checkSettle is left alone, as it may still
// be moving.

const (
	// DefaultCheckInterval is how often a speaker checks a sample.
	DefaultCheckInterval = 10 * time.Second
	// DefaultCheckSample is how many addresses owned by other nodes one
	// round checks at most: with the 200 ms answer wait, a round lasts
	// a few seconds at worst and sends at most 2 frames per address.
	DefaultCheckSample = 16
	// checkSettle is how long after an owner change an address is not
	// checked: a failover or handover is announced within it.
	checkSettle = 5 * time.Second
	// checkConfirmAfter is the pause before a failed check is repeated.
	checkConfirmAfter = 500 * time.Millisecond
	// checkReportEvery bounds the Events and owner messages per address.
	checkReportEvery = time.Minute
	// reannounceEvery bounds how often an owner acts on requests for one
	// address, however many speakers ask.
	reannounceRequestEvery = 5 * time.Second
)

// reannounceMsg is the memberlist message a checker sends the owner.
type reannounceMsg struct {
	// Kind is always "reannounce"; other kinds are ignored, so that a
	// later version can add messages.
	Kind   string `json:"kind"`
	IP     string `json:"ip"`
	From   string `json:"from"`
	Reason string `json:"reason"`
}

const kindReannounce = "reannounce"

// maxMsgLen bounds the messages decoded: a request is far smaller.
const maxMsgLen = 512

func encodeReannounce(ip netip.Addr, from, reason string) []byte {
	b, _ := json.Marshal(reannounceMsg{Kind: kindReannounce, IP: ip.String(), From: from, Reason: reason})
	return b
}

// decodeReannounce parses a message from another speaker. Anything that
// is not a well-formed reannounce request is an error.
func decodeReannounce(b []byte) (ip netip.Addr, from, reason string, err error) {
	if len(b) > maxMsgLen {
		return netip.Addr{}, "", "", fmt.Errorf("message of %d bytes, longer than %d", len(b), maxMsgLen)
	}
	var m reannounceMsg
	if err := json.Unmarshal(b, &m); err != nil {
		return netip.Addr{}, "", "", fmt.Errorf("decoding message: %w", err)
	}
	if m.Kind != kindReannounce {
		return netip.Addr{}, "", "", fmt.Errorf("message kind %q is not %q", m.Kind, kindReannounce)
	}
	ip, err = netip.ParseAddr(m.IP)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, "", "", fmt.Errorf("message address %q is not an IP address", m.IP)
	}
	return ip.Unmap(), m.From, m.Reason, nil
}

// recoverer is what an Announcer offers to act on a reannounce request;
// the layer-2 Announcer has it.
type recoverer interface {
	// Recover reopens the responders ip is announced through and
	// announces ip again.
	Recover(ip netip.Addr) error
}

// HandleMessage takes a message another speaker sent this one through
// memberlist (membership.Config.OnMessage). It must not block: the work
// happens on its own goroutine.
func (s *Speaker) HandleMessage(ctx context.Context, msg []byte) {
	ip, from, reason, err := decodeReannounce(msg)
	if err != nil {
		klog.FromContext(ctx).V(1).Info("Ignoring a malformed message from another speaker", "err", err)
		return
	}
	now := time.Now()
	s.mu.Lock()
	_, mine := s.announcing[ip]
	last, seen := s.requested[ip]
	due := mine && (!seen || now.Sub(last) >= reannounceRequestEvery)
	if due {
		s.requested[ip] = now
	}
	s.mu.Unlock()
	if !mine {
		klog.FromContext(ctx).V(1).Info("Asked to re-announce an address this node does not announce", "ip", ip, "from", from)
		return
	}
	s.metrics.reannounceRequests.Inc()
	if !due {
		return
	}
	klog.FromContext(ctx).Info("Another speaker found this node not answering for an address; reopening the responders and re-announcing it", "ip", ip, "from", from, "reason", reason)
	if r, ok := s.announcer.(recoverer); ok {
		go func() {
			if err := r.Recover(ip); err != nil {
				klog.FromContext(ctx).Error(err, "Cannot reopen the responders for an address", "ip", ip)
			}
		}()
	}
}

// checkLoop runs the self-checks until ctx ends.
func (s *Speaker) checkLoop(ctx context.Context) {
	every := s.opts.CheckInterval
	if every == 0 {
		every = DefaultCheckInterval
	}
	if every < 0 || s.opts.Check == nil {
		return
	}
	sample := s.opts.CheckSample
	if sample <= 0 {
		sample = DefaultCheckSample
	}
	reported := map[netip.Addr]time.Time{}
	for {
		// ±20 % jitter, so that the speakers' rounds spread out.
		d := time.Duration(float64(every) * (0.8 + 0.4*rand.Float64()))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		s.checkRound(ctx, sample, reported)
	}
}

// checkState is what the sync loop records of an elected owner.
type checkState struct {
	owner  string
	since  time.Time
	ifaces []string
}

// checkTarget is one address to check and what the sync loop knew of it.
type checkTarget struct {
	ip     netip.Addr
	owner  string
	ifaces []string // allowed interfaces; nil: any
}

// checkRound checks up to sample addresses owned by other live nodes.
func (s *Speaker) checkRound(ctx context.Context, sample int, reported map[netip.Addr]time.Time) {
	now := time.Now()
	s.mu.Lock()
	var targets []checkTarget
	if !s.isolated {
		for ip, o := range s.checkable {
			if o.owner == s.opts.NodeName || now.Sub(o.since) < checkSettle || !slices.Contains(s.members, o.owner) {
				continue
			}
			if _, draining := s.announcing[ip]; draining {
				continue
			}

			targets = append(targets, checkTarget{ip: ip, owner: o.owner, ifaces: o.ifaces})
		}
	}
	s.mu.Unlock()
	rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
	if len(targets) > sample {
		targets = targets[:sample]
	}
	// An address its owner holds back for a conflict (the Service's
	// condition says so) is answered by the other host, and by nobody
	// else: nothing to check.
	targets = slices.DeleteFunc(targets, func(tg checkTarget) bool {
		return slices.ContainsFunc(s.servicesUsing(tg.ip), func(svc *corev1.Service) bool { return heldForConflict(svc, tg.ip) })
	})
	for k, at := range reported {
		if now.Sub(at) >= checkReportEvery {
			delete(reported, k)
		}
	}
	for _, tg := range targets {
		if ctx.Err() != nil {
			return
		}
		reason, macs, ok := s.checkOnce(ctx, tg)
		if ok {
			continue
		}
		// Once more before any alarm.
		select {
		case <-ctx.Done():
			return
		case <-time.After(checkConfirmAfter):
		}
		if !s.stillOwner(tg) {
			continue
		}
		if reason, macs, ok = s.checkOnce(ctx, tg); ok {
			continue
		}
		s.metrics.checkFailures.WithLabelValues(reason).Inc()
		if _, done := reported[tg.ip]; done {
			continue
		}
		reported[tg.ip] = now
		s.reportCheck(ctx, tg, reason, macs)
	}
}

// stillOwner reports whether tg's owner is still the elected one.
func (s *Speaker) stillOwner(tg checkTarget) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.checkable[tg.ip]
	return ok && o.owner == tg.owner && slices.Contains(s.members, tg.owner)
}

// checkOnce asks the LAN once; ok when the owner's MAC answers. Otherwise
// reason is api.EventNotAnswering or api.EventWrongAnnouncer, with the
// MACs that answered.
func (s *Speaker) checkOnce(ctx context.Context, tg checkTarget) (reason string, macs []net.HardwareAddr, ok bool) {
	s.metrics.checks.Inc()
	macs, err := s.opts.Check(ctx, tg.ip, tg.ifaces)
	if err != nil {
		// Not the owner's fault: this node cannot ask (no socket of the
		// family, a rate limit). Nothing to report.
		klog.FromContext(ctx).V(2).Info("Cannot check an address", "ip", tg.ip, "err", err)
		return "", nil, true
	}
	if len(macs) == 0 {
		return api.EventNotAnswering, nil, false
	}
	if s.opts.MACOwner != nil {
		for _, m := range macs {
			if s.opts.MACOwner(m) == tg.owner {
				return "", macs, true
			}
		}
	}
	return api.EventWrongAnnouncer, macs, false
}

// reportCheck raises the Event, logs, and asks the owner to recover.
func (s *Speaker) reportCheck(ctx context.Context, tg checkTarget, reason string, macs []net.HardwareAddr) {
	var msg string
	var names []string
	for _, m := range macs {
		n := m.String()
		if s.opts.MACOwner != nil {
			if node := s.opts.MACOwner(m); node != "" {
				n += " (node " + node + ")"
			}
		}
		names = append(names, n)
	}
	switch reason {
	case api.EventNotAnswering:
		msg = fmt.Sprintf("node %q checked address %s, which node %q announces, and nobody answered; node %q was asked to reopen its responders and re-announce it", s.opts.NodeName, tg.ip, tg.owner, tg.owner)
	default:
		msg = fmt.Sprintf("node %q checked address %s, which node %q announces, and it was answered by %s instead; node %q was asked to re-announce it", s.opts.NodeName, tg.ip, tg.owner, strings.Join(names, ", "), tg.owner)
	}
	err := errors.New("no way to reach the owner")
	if s.opts.AskOwner != nil {
		err = s.opts.AskOwner(tg.owner, encodeReannounce(tg.ip, s.opts.NodeName, reason))
	}
	klog.FromContext(ctx).Info("An address is not answered by its owner", "ip", tg.ip, "owner", tg.owner, "reason", reason, "answeredBy", names, "ownerToldErr", err)
	for _, svc := range s.servicesUsing(tg.ip) {
		s.recorder.Event(svc, corev1.EventTypeWarning, reason, msg)
	}
}
