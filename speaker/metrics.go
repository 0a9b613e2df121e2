package speaker

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the speaker's own Prometheus metrics; the layer-2 packet
// counters are registered by the binary from the announcer's statistics.
type Metrics struct {
	Registry *prometheus.Registry
	owned    prometheus.Gauge
	members  prometheus.Gauge
	failover prometheus.Gauge
	// failovers has one sample per takeover: the time from this node
	// learning that a member is gone to its first announcement of an
	// address that member held.
	failovers prometheus.Histogram
	// duplicates counts claims by other MACs on addresses this node
	// announces. Labelled by address only: the MACs are attacker-chosen,
	// and a label per MAC would let one host grow the series without
	// bound; the Events and log lines name them.
	duplicates *prometheus.CounterVec
	// conditionWrites counts ironlb.io/Announced conditions written.
	conditionWrites prometheus.Counter
	// Self-checks (selfcheck.go).
	checks             prometheus.Counter
	checkFailures      *prometheus.CounterVec
	reannounceRequests prometheus.Counter
	// addressConflicts counts distinct conflicts found by probing a new
	// address (one per answering MAC per conflict, not per probe), by
	// address; heldBack is how many addresses wait for the conflict to
	// clear; probes is how long each probe took.
	addressConflicts *prometheus.CounterVec
	heldBack         prometheus.Gauge
	probes           prometheus.Histogram
}

// NewMetrics registers the speaker's metrics in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ironlb_speaker_owned_addresses",
			Help: "Addresses this node announces."}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ironlb_speaker_members",
			Help: "Live speakers in the memberlist cluster, this one included."}),
		failover: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ironlb_speaker_last_failover_seconds",
			Help: "Time from the last membership or link change to this node taking over an address from a member that is gone."}),
		failovers: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ironlb_failover_seconds",
			Help: "Time from this node learning that a member is gone to its first announcement of an address that member held; one sample per takeover.",
			// Detection is not in here (memberlist's part, about 0.5 s);
			// this is the speaker's own reaction, normally milliseconds.
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ironlb_speaker_duplicate_announcer_total",
			Help: "Frames in which another MAC (a foreign host or another speaker) announced an address this node announces, or stepped back from in a split brain."}, []string{"address"}),
		conditionWrites: prometheus.NewCounter(prometheus.CounterOpts{Name: "ironlb_speaker_condition_writes_total",
			Help: "Writes of the ironlb.io/Announced Service condition by this node (server-side apply); one per change of who announces a Service."}),
		checks: prometheus.NewCounter(prometheus.CounterOpts{Name: "ironlb_speaker_self_checks_total",
			Help: "Questions this node asked the LAN to check that another node answers for the addresses it owns."}),
		checkFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ironlb_speaker_self_check_failures_total",
			Help: "Confirmed failed self-checks, by reason: NotAnswering (nobody answered) or WrongAnnouncer (only MACs other than the owner's did)."}, []string{"reason"}),
		reannounceRequests: prometheus.NewCounter(prometheus.CounterOpts{Name: "ironlb_speaker_reannounce_requests_total",
			Help: "Requests from other speakers, after a failed self-check, that this node re-announce an address it announces."}),
	}
	m.addressConflicts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ironlb_speaker_address_conflicts_total",
		Help: "Conflicts found by probing an address before its first announcement: another host (not a speaker) answered; one per answering MAC per conflict."}, []string{"address"})
	m.heldBack = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ironlb_speaker_addresses_held_back",
		Help: "Addresses this node should announce but holds back because another host on the LAN answered their probe."})
	m.probes = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ironlb_speaker_probe_seconds",
		Help:    "Time each probe of a new address took (RFC 5227 ARP probes, IPv6 DAD): the extra latency of a first announcement.",
		Buckets: []float64{0.01, 0.1, 0.25, 0.5, 0.6, 0.7, 0.75, 0.8, 1, 2, 5}})
	m.Registry.MustRegister(m.addressConflicts, m.heldBack, m.probes)
	m.Registry.MustRegister(m.owned, m.members, m.failover, m.failovers, m.duplicates, m.conditionWrites,
		m.checks, m.checkFailures, m.reannounceRequests,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}
