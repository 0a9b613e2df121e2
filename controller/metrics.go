package controller

import (
	"math/big"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ironlb/ironlb/ipam"
)

// Metrics are the controller's Prometheus metrics.
type Metrics struct {
	Registry     *prometheus.Registry
	total        *prometheus.GaugeVec
	inUse        *prometheus.GaugeVec
	free         *prometheus.GaugeVec
	allocations  prometheus.Counter
	failures     prometheus.Counter
	statusWrites prometheus.Counter
	loaded       prometheus.Gauge
	stale        prometheus.Gauge
}

// NewMetrics registers the controller's metrics in a new registry.
func NewMetrics() *Metrics {
	pool := []string{"pool", "family"}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		total: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ironlb_pool_addresses_total",
			Help: "Addresses a pool can hand out, per family."}, pool),
		inUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ironlb_pool_addresses_in_use",
			Help: "Addresses of a pool held by Services, per family."}, pool),
		free: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ironlb_pool_addresses_free",
			Help: "Addresses of a pool still free, per family."}, pool),
		allocations: prometheus.NewCounter(prometheus.CounterOpts{Name: "ironlb_allocations_total",
			Help: "Addresses given to Services."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "ironlb_allocation_failures_total",
			Help: "Reconciles that left a Service without the addresses it asked for."}),
		statusWrites: prometheus.NewCounter(prometheus.CounterOpts{Name: "ironlb_status_writes_total",
			Help: "Service status patches sent to the API server."}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ironlb_config_loaded",
			Help: "1 once an address-pool config is in force."}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ironlb_config_stale",
			Help: "1 when the ConfigMap is missing or its latest version was rejected, so an older config (or none) is in force."}),
	}
	m.Registry.MustRegister(m.total, m.inUse, m.free, m.allocations, m.failures, m.statusWrites, m.loaded, m.stale,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// StatusWrites is the number of status patches sent so far.
func (m *Metrics) StatusWrites() float64 { return counterValue(m.statusWrites) }

func (m *Metrics) configState(loaded, stale bool) {
	m.loaded.Set(b2f(loaded))
	m.stale.Set(b2f(stale))
}

func (m *Metrics) pools(stats []ipam.Stats) {
	m.total.Reset()
	m.inUse.Reset()
	m.free.Reset()
	for _, s := range stats {
		total, _ := new(big.Float).SetInt(s.Total).Float64()
		l := prometheus.Labels{"pool": s.Pool, "family": s.Family.String()}
		m.total.With(l).Set(total)
		m.inUse.With(l).Set(float64(s.Used))
		m.free.With(l).Set(total - float64(s.Used))
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
