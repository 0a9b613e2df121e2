package controller

import (
	"math/big"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ironlb/ironlb/ipam"
)

// Metrics are the controller's Prometheus metrics.
type Metrics struct {
	Registry     *prometheus.Registry
	pools        *poolCollector
	allocations  prometheus.Counter
	failures     prometheus.Counter
	statusWrites prometheus.Counter
	events       *prometheus.CounterVec
	loaded       prometheus.Gauge
	stale        prometheus.Gauge
}

// NewMetrics registers the controller's metrics in a new registry.
func NewMetrics() *Metrics {
	pool := []string{"pool", "family"}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		pools: &poolCollector{
			total: prometheus.NewDesc("ironlb_pool_addresses_total", "Addresses a pool can hand out, per family.", pool, nil),
			inUse: prometheus.NewDesc("ironlb_pool_addresses_in_use", "Addresses of a pool held by Services, per family.", pool, nil),
			free:  prometheus.NewDesc("ironlb_pool_addresses_free", "Addresses of a pool still free, per family.", pool, nil),
		},
		allocations: prometheus.NewCounter(prometheus.CounterOpts{Name: "ironlb_allocations_total",
			Help: "Addresses given to Services."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "ironlb_allocation_failures_total",
			Help: "Reconciles that left a Service without the addresses it asked for."}),
		statusWrites: prometheus.NewCounter(prometheus.CounterOpts{Name: "ironlb_status_writes_total",
			Help: "Service status patches sent to the API server."}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ironlb_events_total",
			Help: "Events the controller recorded, per reason (repeats folded into a series by the Events library count each time)."}, []string{"reason"}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ironlb_config_loaded",
			Help: "1 once an address-pool config is in force."}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ironlb_config_stale",
			Help: "1 when the ConfigMap is missing or its latest version was rejected, so an older config (or none) is in force."}),
	}
	m.Registry.MustRegister(m.pools, m.allocations, m.failures, m.statusWrites, m.events, m.loaded, m.stale,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// StatusWrites is the number of status patches sent so far.
func (m *Metrics) StatusWrites() float64 { return counterValue(m.statusWrites) }

// Events is the number of Events with reason recorded so far.
func (m *Metrics) Events(reason string) float64 {
	return counterValue(m.events.WithLabelValues(reason))
}

func (m *Metrics) configState(loaded, stale bool) {
	m.loaded.Set(b2f(loaded))
	m.stale.Set(b2f(stale))
}

// poolCollector reads the pools' occupancy from the allocator when
// Prometheus scrapes, so the gauges can never lag behind or miss a pool
// that was removed, and no reconcile pays for refreshing them.
type poolCollector struct {
	total, inUse, free *prometheus.Desc
	stats              atomic.Pointer[func() []ipam.Stats]
}

// setSource makes the collector read stats; until then it reports no pool.
func (m *Metrics) setSource(stats func() []ipam.Stats) { m.pools.stats.Store(&stats) }

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.total
	ch <- c.inUse
	ch <- c.free
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.stats.Load()
	if src == nil {
		return
	}
	for _, s := range (*src)() {
		total, _ := new(big.Float).SetInt(s.Total).Float64()
		lv := []string{s.Pool, s.Family.String()}
		ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, total, lv...)
		ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(s.Used), lv...)
		ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, total-float64(s.Used), lv...)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
