package controller

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/ipam"
)

// gauges gathers the pool gauges as "name pool family" -> value.
func gauges(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			if mt.GetGauge() == nil || len(mt.GetLabel()) != 2 {
				continue
			}
			out[mf.GetName()+" "+mt.GetLabel()[1].GetValue()+" "+mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
		}
	}
	return out
}

// The pool gauges are read from the ledger at scrape time: they follow
// every allocation and pool change with no refresh call, and a pool that
// goes away disappears.
func TestPoolGaugesAtScrapeTime(t *testing.T) {
	m := NewMetrics()
	if got := gauges(t, m); len(got) != 0 {
		t.Fatalf("before a source is set: %v", got)
	}
	l := ipam.NewLedger()
	m.setSource(l.Stats)
	mustRange := func(s string) ipam.Range {
		r, err := ipam.ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	pools := []ipam.Pool{
		{Name: "a", AutoAssign: true, Ranges: []ipam.Range{mustRange("198.51.100.0/30"), mustRange("2001:db8:100::/127")}},
		{Name: "b", AutoAssign: true, Ranges: []ipam.Range{mustRange("198.51.100.8/29")}},
	}
	if _, err := l.Load(pools, nil); err != nil {
		t.Fatal(err)
	}
	r := l.Ensure(ipam.Request{Service: ipam.Service{Key: "ns/s"}, Families: []ipam.Family{ipam.IPv4}, Required: []bool{true}, IPs: map[ipam.Family]netip.Addr{}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	want := map[string]float64{
		"ironlb_pool_addresses_total a IPv4": 4, "ironlb_pool_addresses_in_use a IPv4": 1, "ironlb_pool_addresses_free a IPv4": 3,
		"ironlb_pool_addresses_total a IPv6": 2, "ironlb_pool_addresses_in_use a IPv6": 0, "ironlb_pool_addresses_free a IPv6": 2,
		"ironlb_pool_addresses_total b IPv4": 8, "ironlb_pool_addresses_in_use b IPv4": 0, "ironlb_pool_addresses_free b IPv4": 8,
	}
	if diff := cmp.Diff(want, gauges(t, m)); diff != "" {
		t.Errorf("gauges (-want +got):\n%s", diff)
	}
	l.Release("ns/s")
	if _, err := l.Load(pools[1:], nil); err != nil {
		t.Fatal(err)
	}
	want = map[string]float64{
		"ironlb_pool_addresses_total b IPv4": 8, "ironlb_pool_addresses_in_use b IPv4": 0, "ironlb_pool_addresses_free b IPv4": 8,
	}
	if diff := cmp.Diff(want, gauges(t, m)); diff != "" {
		t.Errorf("after dropping pool a (-want +got):\n%s", diff)
	}
}
