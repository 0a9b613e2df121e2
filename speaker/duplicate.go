package speaker

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/api/service"
	"github.com/ironlb/ironlb/speaker/election"
)

const (
	// duplicateReportEvery is how often a Warning Event and a log line
	// are raised for one address claimed by one MAC while the claims go
	// on: the first at once, then one per interval, so a host that keeps
	// claiming keeps showing up without flooding the API server (client-go's
	// recorder further folds repeats into one Event with a count).
	duplicateReportEvery = 10 * time.Second

	// yieldFor is how long a speaker that lost a split brain stays silent
	// for the address before it trusts its own election again. A
	// membership change ends it sooner. If the two still disagree then,
	// the owner's defence silences this one again within milliseconds;
	// a longer silence would risk a dark address should the owner stop
	// announcing without a membership change.
	yieldFor = 5 * time.Second

	// reannounceEvery is how often the winner of a split brain announces
	// the address again while it lasts, so that the loser, which watches
	// the address, keeps stepping back instead of trying again every
	// yieldFor. Shorter than yieldFor, so one lost frame does not end it.
	reannounceEvery = 2 * time.Second

	// splitHold is how long the winner keeps re-announcing after it last
	// heard the loser, unless the two see each other again first. The
	// loser, kept quiet, is heard again only when it tries once more.
	splitHold = time.Minute
)

// splitBrainAnnouncer is what an Announcer offers to settle a split brain
// without the loser re-announcing every yieldFor; the layer-2 Announcer
// has it. Without it the loser retries every yieldFor, and the winner's
// defence silences it again within milliseconds.
type splitBrainAnnouncer interface {
	// SetWatched reports claims on ips, not announced here, through
	// DuplicateAnnouncer.
	SetWatched(ips []netip.Addr)
	// Reannounce sends one announcement round for an owned ip.
	Reannounce(ip netip.Addr)
}

// split is the winner's side of a split brain over one address.
type split struct {
	other string    // the speaker that also announced it
	heard time.Time // last claim heard from it
	sent  time.Time // last announcement for it
}

// duplicateLookupEvery bounds how often the Services using a claimed
// address are looked up for one claimant: a host flooding claims must not
// make the speaker list every Service per frame.
const duplicateLookupEvery = time.Second

// dupKey identifies one claimant of one address, and one Service using it
// (svc: the Service's UID; "lookup" and "log" for the lookup and the log
// line, which no UID can be), for
// rate-limiting.
type dupKey struct {
	ip  netip.Addr
	mac string
	svc types.UID
}

// yieldsTo reports whether self must stop announcing ip because other, a
// speaker that also announces it, is the elected owner between the two.
// Both compute the same answer, whatever their views of the membership,
// so exactly one of them keeps announcing.
//
// It applies only when self believes other is dead (not in members): that
// is what a split brain looks like, each side having lost the other. A
// speaker self sees alive computes the same election from the same
// members, so a claim in its name is more likely a forged frame (a MAC is
// not authenticated) than a real disagreement, and stopping for it would
// let a forger take the address down; self defends instead, as against a
// foreign host, until the views agree.
func yieldsTo(self, other string, members []string, ip netip.Addr) bool {
	return other != "" && other != self && !slices.Contains(members, other) &&
		election.Owner(ip, []string{self, other}) == other
}

// DuplicateAnnouncer reports that mac, not this node's, announced ip while
// this node announces it (layer2.Options.OnConflict). The layer-2
// responder has already re-announced the address when this is called.
//
// It counts the claim, and at most once per address and MAC per
// duplicateReportEvery raises a Warning Event on every Service using ip
// and logs it. When mac belongs to another speaker (Options.MACOwner) that
// wins the pairwise election for ip, this node stops announcing ip for a
// while (a split brain: the two hold different views of the membership);
// otherwise it keeps announcing and defending: a claim by a host that is
// not a speaker never withdraws an address.
//
// Safe for concurrent use; it never blocks on the API server.
func (s *Speaker) DuplicateAnnouncer(ctx context.Context, ip netip.Addr, mac net.HardwareAddr) {
	var other string
	if s.opts.MACOwner != nil {
		other = s.opts.MACOwner(mac)
	}
	now := time.Now()
	s.mu.Lock()
	if s.heardNewOwner(ip, other, now) {
		s.mu.Unlock()
		klog.FromContext(ctx).V(1).Info("Handover: the other speaker announces the address", "ip", ip, "speaker", other)
		return
	}
	s.metrics.duplicates.WithLabelValues(ip.String()).Inc()
	if other == "" && s.foreign != nil {
		// Shown in the Service's condition while the claims go on.
		if c, ok := s.foreign[ip]; !ok || now.Sub(c.at) >= foreignClaimFor {
			defer s.Kick()
		}
		s.foreign[ip] = foreignClaim{mac: mac.String(), at: now}
	}
	yield := yieldsTo(s.opts.NodeName, other, s.members, ip)
	_, already := s.yields[ip]
	_, splitting := s.splits[ip]
	// Kept against another speaker, also one this node sees alive: its
	// memberlist may declare that one dead a moment later (the usual order
	// at the start of a split brain), and the reminders are what keep it
	// quiet then.
	won := !yield && other != "" && other != s.opts.NodeName
	switch {
	case yield:
		s.yields[ip] = now.Add(yieldFor)
	case won && splitting:
		st := s.splits[ip]
		st.other, st.heard = other, now
		s.splits[ip] = st
	case won && !slices.Contains(s.members, other):
		// A split brain this node wins: the layer-2 responder leaves
		// claims by speakers alone, so the sync loop re-announces at
		// once (a zero sent is due) and then keeps reminding the loser.
		s.splits[ip] = split{other: other, heard: now}
	case won:
		// A speaker this node sees alive: most likely it is taking the
		// address over and this node's view is a moment behind, so it
		// gets reannounceEvery before the first reminder; by then this
		// node has usually learned it lost the address, and the
		// reminders stop (Reannounce sends nothing for an address not
		// announced). If not, the views disagree for longer, or the
		// frames are forged: the reminders win the LAN back.
		s.splits[ip] = split{other: other, heard: now, sent: now}
	}
	s.mu.Unlock()
	if (yield && !already) || (won && !splitting) {
		s.Kick()
	}

	// due reports whether key's report is due at now, and if so records
	// it as made. Called with s.dupMu held.
	due := func(key dupKey, every time.Duration) bool {
		if last, ok := s.dupReported[key]; ok && now.Sub(last) < every {
			return false
		}
		s.dupReported[key] = now
		return true
	}
	s.dupMu.Lock()
	lookup := due(dupKey{ip, mac.String(), "lookup"}, duplicateLookupEvery)
	if lookup {
		// Forget claimants quiet for a while, so the map stays as small
		// as the set of current ones.
		for k, at := range s.dupReported {
			if now.Sub(at) >= 2*duplicateReportEvery {
				delete(s.dupReported, k)
			}
		}
	}
	s.dupMu.Unlock()
	if !lookup {
		return
	}
	// Each Service gets its own Event at most once per interval, so that
	// one that starts using the address meanwhile hears of it too.
	var svcs []*corev1.Service
	s.dupMu.Lock()
	for _, svc := range s.servicesUsing(ip) {
		if due(dupKey{ip, mac.String(), svc.UID}, duplicateReportEvery) {
			svcs = append(svcs, svc)
		}
	}
	logIt := due(dupKey{ip, mac.String(), "log"}, duplicateReportEvery) || len(svcs) > 0
	s.dupMu.Unlock()
	if !logIt {
		return
	}

	var msg string
	switch {
	case other == "" || other == s.opts.NodeName:
		msg = "address %s is also announced by MAC %s, which is not an ironlb speaker; node %q keeps announcing and defending it"
	case yield:
		msg = "address %s is also announced by MAC %s of node %q, another ironlb speaker that this node lost contact with and the elected owner between the two; node %q stops announcing it"
	case slices.Contains(s.currentMembers(), other):
		msg = "address %s is also announced by MAC %s of node %q, an ironlb speaker this node sees alive and that should not announce it (a forged frame, or a view that has not converged yet); node %q keeps announcing it and re-announces it every 2 s while that lasts"
	default:
		msg = "address %s is also announced by MAC %s of node %q, another ironlb speaker that this node lost contact with; node %q is the elected owner between the two and re-announces it"
	}
	args := []any{ip, mac}
	if other != "" && other != s.opts.NodeName {
		args = append(args, other)
	}
	args = append(args, s.opts.NodeName)
	klog.FromContext(ctx).Info("Another MAC announces an address this node serves", "ip", ip, "mac", mac.String(),
		"speaker", other, "yielding", yield, "services", len(svcs))
	// The other speaker's Node is the Event's related object, and the
	// action says what this node does, so claims by different MACs or with
	// different outcomes are never folded into one series.
	var related runtime.Object
	if other != "" && other != s.opts.NodeName && s.nodes != nil {
		if n, err := s.nodes.Get(other); err == nil {
			related = n
		}
	}
	action := "Defend"
	if yield {
		action = "Yield"
	}
	for _, svc := range svcs {
		s.recorder.Related(svc, related, corev1.EventTypeWarning, api.EventDuplicateAnnouncer, action, msg, args...)
	}
}

func (s *Speaker) currentMembers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.members
}

// servicesUsing lists the Services of this speaker that hold ip.
func (s *Speaker) servicesUsing(ip netip.Addr) []*corev1.Service {
	if users := s.users.Load(); users != nil {
		// The last sync's index: a lookup instead of a pass over every
		// Service, which the self-checks and a flood of claims would
		// otherwise pay per address.
		return slices.Clone((*users)[ip])
	}
	all, _ := s.services.List(labels.Everything())
	var out []*corev1.Service
	for _, svc := range all {
		if service.Ours(svc, s.opts.LBClass) && slices.Contains(service.IngressIPs(svc), ip) {
			out = append(out, svc)
		}
	}
	return out
}

// settleSplits is the sync loop's part in split brains, with s.mu held:
// it drops those whose loser has been quiet for splitHold (MembersChanged
// drops those whose loser came back), re-announces the addresses this node won
// (in mine) every reannounceEvery, and returns the addresses to watch
// (those it yields) and when it next has something to do (zero: nothing).
func (s *Speaker) settleSplits(now time.Time, mine map[netip.Addr][]string) (watch []netip.Addr, reannounce []netip.Addr, next time.Time) {
	soonest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for ip, st := range s.splits {
		if now.Sub(st.heard) >= splitHold {
			delete(s.splits, ip)
			continue
		}
		if _, ok := mine[ip]; !ok {
			continue
		}
		if due := st.sent.Add(reannounceEvery); !now.Before(due) {
			reannounce = append(reannounce, ip)
			st.sent = now
			s.splits[ip] = st
		}
		soonest(st.sent.Add(reannounceEvery))
	}
	for ip, until := range s.yields {
		if now.Before(until) {
			watch = append(watch, ip)
			soonest(until)
		}
	}
	slices.SortFunc(watch, func(a, b netip.Addr) int { return a.Compare(b) })
	return watch, reannounce, next
}

// yielded reports whether ip is held back after a lost split brain at now,
// and when that ends. Called by the sync loop with s.mu held; expired
// entries are dropped.
func (s *Speaker) yielded(ip netip.Addr, now time.Time) (bool, time.Time) {
	until, ok := s.yields[ip]
	if !ok {
		return false, time.Time{}
	}
	if !now.Before(until) {
		delete(s.yields, ip)
		return false, time.Time{}
	}
	return true, until
}
