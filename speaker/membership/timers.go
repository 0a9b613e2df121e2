package membership

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// The failure detector's timers. memberlist's LAN defaults (1 s probes,
// 500 ms probe timeout, suspicion 4×) take 5-6 s to declare a crashed member
// dead; the speaker's failover budget (DESIGN.md: traffic back within a
// second, median) leaves the detector about half of that, the rest going to
// gossiping the death, recomputing owners and announcing.
//
// For a member of a cluster of n ≤ 9 that crashes, memberlist's timeline is:
//
//	0 … ProbeInterval/(n-1)  until a peer probes it (each peer probes one member per interval)
//	+ ProbeInterval          the probe fails: direct ack timeout, then indirect and TCP pings until the interval ends
//	+ SuspicionMult × ProbeInterval
//	                         suspicion timer (memberlist scales it by log10(n) only beyond 10 members)
//	+ one GossipInterval     the death reaches the others
//
// Measured by the package tests on loopback, three members, a shared
// 2-CPU machine (10 trials each):
//
//	crash (no Leave), seen by both others   median ~450-470 ms, max ~580-680 ms
//	cut off the network, seen by both       ~480-590 ms
//	Leave, seen by both others              median ~5 ms, max ~8 ms (Group.Leave pings the others
//	                                        so that the leave need not wait for a gossip tick)
//
// With suspicionMult 2 instead of 3 a crash is seen ~80 ms sooner (median
// 384 ms, max 483 ms), but see suspicionMult for what that costs under load.
const (
	// probeInterval: how often each member probes one other member. 100 ms
	// of UDP per member is nothing on a LAN (a ping and an ack of ~100
	// bytes each, 10 per second).
	probeInterval = 100 * time.Millisecond

	// probeTimeout: how long to wait for the direct ack before asking
	// others to probe indirectly. LAN round trips are well under a
	// millisecond; 50 ms absorbs a GC pause or a scheduler hiccup on a busy
	// node. The probe as a whole still has the rest of the interval for
	// the indirect and TCP fallback pings, so a slow ack is not yet a
	// suspicion.
	probeTimeout = 50 * time.Millisecond

	// suspicionMult: a suspected member has this many probe intervals to
	// refute before it is declared dead. memberlist sets the number of
	// independent confirmations it expects to suspicionMult-2; with 3 a
	// suspicion raised by one member alone waits suspicionMaxTimeoutMult
	// times longer unless a second member confirms it (Lifeguard's
	// "dogpile" rule). That is what keeps one overloaded member that
	// misses acks from declaring healthy ones dead, at the price of one
	// extra probe interval of detection time compared with 2, where no
	// confirmation is expected and one member's suspicion is enough.
	//
	// Measured with both CPUs saturated by spinning goroutines in the test
	// process (which starves memberlist's goroutines far more than a busy
	// node starves a separate speaker process: busy-loop processes caused
	// no suspicion at all): with 3, tens of suspicions per 15 s, all
	// refuted, no membership change in any run; with 2, one run in four
	// flapped, 19 false deaths in 15 s. 4 or more would not buy more
	// safety in a three-node cluster: memberlist would expect more
	// confirmations than there are other members, drop the rule and use
	// the plain (longer) timeout for every suspicion.
	suspicionMult = 3

	// suspicionMaxTimeoutMult bounds the unconfirmed suspicion: 4 × 300 ms
	// = 1.2 s. Long enough for a healthy but slow member to get its refutation
	// through, short enough that an isolated member still converges on its
	// own view within a couple of seconds.
	suspicionMaxTimeoutMult = 4

	// awarenessMaxMultiplier: memberlist's self-awareness (Lifeguard's
	// "local health"). A member whose own probes time out without the
	// nacks that healthy peers would send, or that has to refute
	// suspicions about itself, raises its health score and stretches its
	// probe interval (and with it the time it waits for indirect and TCP
	// acks) by up to this factor. The point is that the member most likely
	// to be wrong, the overloaded one, slows down its accusations instead
	// of spreading them. It costs nothing on a healthy cluster: the score
	// is 0 and detection by healthy members is unchanged. memberlist's
	// default of 8 lets a degraded member probe only every 800 ms at worst;
	// other members keep probing at full speed, so failover is not slowed,
	// and a degraded member's view matters less than its accusations. It
	// also means a member cut off from the LAN (score 4-5 in the tests)
	// takes 1.5 s rather than 0.5 s to consider itself alone, which is
	// harmless: nobody can hear it then, and it must Rejoin afterwards
	// anyway. Under saturated CPU the score reached 1-2.
	awarenessMaxMultiplier = 8

	// gossipInterval: how often queued broadcasts (suspect, dead, alive,
	// a leave) are sent to gossipNodes random members on their own. They
	// also ride on every ping and ack a member sends, which at 100 ms
	// probes is about 20 packets a second per member, so the gossip tick
	// adds little to how fast a death spreads; but every tick wakes the
	// process, and the Go runtime's monitor with it. Measured:
	//   - lab, 3 idle speakers, context switches per speaker: 240/s at
	//     50 ms, 167/s at 200 ms; idle CPU 1.45 % -> 1.2 % of a core
	//     (host loaded in both); earlier, 2.35 % at 20 ms.
	//   - detection, 3 members in bench-scale, 40 kills each, same hour:
	//     50 ms p50 482-495 ms / p99 693-700 ms; 100 ms 493 / 704 ms;
	//     200 ms 501 / 737 ms.
	// 200 ms is also memberlist's LAN default.
	gossipInterval = 200 * time.Millisecond
	gossipNodes    = 3

	// gossipToTheDeadTime: members still gossip to a member this long after
	// declaring it dead, which lets a member that was only cut off see the
	// accusation and refute it as soon as its link is back, even before
	// the speaker calls Rejoin. memberlist's LAN default; it costs only
	// packets that are dropped while the member is really gone.
	gossipToTheDeadTime = 30 * time.Second

	// pushPullInterval: full state exchange with one random live member,
	// the anti-entropy that repairs anything gossip lost. A speaker
	// cluster's state is tiny (one entry per node), so every 10 s instead
	// of 30 s costs little and bounds how long a lost broadcast lingers.
	pushPullInterval = 10 * time.Second

	// tcpTimeout bounds dialing and reading a stream (push/pull, join).
	// A LAN answers in milliseconds; one second keeps Rejoin moving past
	// peers that are down instead of waiting memberlist's default 10 s on
	// each.
	tcpTimeout = time.Second

	// retransmitMult: each broadcast is sent retransmitMult × ⌈log10(n+1)⌉
	// times. memberlist's LAN default; with gossipNodes peers per tick a
	// broadcast in a small cluster is done within two ticks, which is
	// also how long Leave blocks.
	retransmitMult = 4

	// indirectChecks: how many members are asked to probe a member whose
	// direct ack is late. Default; in a cluster of three only one can.
	indirectChecks = 3
)

// Timers are the failure detector's settings. The zero value of a field
// means the tuned value (TunedTimers); the constants above say why each
// has it. They are exported so that a benchmark can compare them with
// memberlist's LAN defaults (LANTimers) in one run.
type Timers struct {
	ProbeInterval           time.Duration
	ProbeTimeout            time.Duration
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	AwarenessMaxMultiplier  int
	GossipInterval          time.Duration
	GossipNodes             int
	GossipToTheDeadTime     time.Duration
	PushPullInterval        time.Duration
	TCPTimeout              time.Duration
	RetransmitMult          int
	IndirectChecks          int
}

// TunedTimers are the speaker's timers.
func TunedTimers() Timers {
	return Timers{
		ProbeInterval:           probeInterval,
		ProbeTimeout:            probeTimeout,
		SuspicionMult:           suspicionMult,
		SuspicionMaxTimeoutMult: suspicionMaxTimeoutMult,
		AwarenessMaxMultiplier:  awarenessMaxMultiplier,
		GossipInterval:          gossipInterval,
		GossipNodes:             gossipNodes,
		GossipToTheDeadTime:     gossipToTheDeadTime,
		PushPullInterval:        pushPullInterval,
		TCPTimeout:              tcpTimeout,
		RetransmitMult:          retransmitMult,
		IndirectChecks:          indirectChecks,
	}
}

// LANTimers are memberlist's DefaultLANConfig timers, which MetalLB's
// speaker uses unchanged.
func LANTimers() Timers {
	c := memberlist.DefaultLANConfig()
	return Timers{
		ProbeInterval:           c.ProbeInterval,
		ProbeTimeout:            c.ProbeTimeout,
		SuspicionMult:           c.SuspicionMult,
		SuspicionMaxTimeoutMult: c.SuspicionMaxTimeoutMult,
		AwarenessMaxMultiplier:  c.AwarenessMaxMultiplier,
		GossipInterval:          c.GossipInterval,
		GossipNodes:             c.GossipNodes,
		GossipToTheDeadTime:     c.GossipToTheDeadTime,
		PushPullInterval:        c.PushPullInterval,
		TCPTimeout:              c.TCPTimeout,
		RetransmitMult:          c.RetransmitMult,
		IndirectChecks:          c.IndirectChecks,
	}
}

// withDefaults fills zero fields from TunedTimers.
func (t Timers) withDefaults() Timers {
	d := TunedTimers()
	orD := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	orI := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	orD(&t.ProbeInterval, d.ProbeInterval)
	orD(&t.ProbeTimeout, d.ProbeTimeout)
	orI(&t.SuspicionMult, d.SuspicionMult)
	orI(&t.SuspicionMaxTimeoutMult, d.SuspicionMaxTimeoutMult)
	orI(&t.AwarenessMaxMultiplier, d.AwarenessMaxMultiplier)
	orD(&t.GossipInterval, d.GossipInterval)
	orI(&t.GossipNodes, d.GossipNodes)
	orD(&t.GossipToTheDeadTime, d.GossipToTheDeadTime)
	orD(&t.PushPullInterval, d.PushPullInterval)
	orD(&t.TCPTimeout, d.TCPTimeout)
	orI(&t.RetransmitMult, d.RetransmitMult)
	orI(&t.IndirectChecks, d.IndirectChecks)
	return t
}

// memberlistConfig turns the timers into a memberlist config. It starts
// from DefaultLANConfig so that settings not mentioned here keep
// memberlist's own LAN choices.
func memberlistConfig(t Timers) *memberlist.Config {
	t = t.withDefaults()
	c := memberlist.DefaultLANConfig()
	c.ProbeInterval = t.ProbeInterval
	c.ProbeTimeout = t.ProbeTimeout
	c.SuspicionMult = t.SuspicionMult
	c.SuspicionMaxTimeoutMult = t.SuspicionMaxTimeoutMult
	c.AwarenessMaxMultiplier = t.AwarenessMaxMultiplier
	c.GossipInterval = t.GossipInterval
	c.GossipNodes = t.GossipNodes
	c.GossipToTheDeadTime = t.GossipToTheDeadTime
	c.PushPullInterval = t.PushPullInterval
	c.TCPTimeout = t.TCPTimeout
	c.RetransmitMult = t.RetransmitMult
	c.IndirectChecks = t.IndirectChecks
	// Encryption is mandatory: refuse plaintext in both directions, so a
	// member without the key can neither read nor inject state.
	c.GossipVerifyIncoming = true
	c.GossipVerifyOutgoing = true
	// No LZW: a speaker's messages are a few dozen bytes (pings, acks,
	// one alive/dead entry), which compression cannot shrink, and every
	// compressed message allocated a fresh LZW encoder: 10 probes a
	// second made it a third of an idle speaker's CPU. Receivers still
	// decode compressed messages, so a rolling upgrade mixes fine.
	c.EnableCompression = false
	return c
}
