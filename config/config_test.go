package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/ipam"
)

// A MetalLB v0.11 layer-2 config, as its documentation writes it.
const metallbConfig = `
address-pools:
- name: default
  protocol: layer2
  addresses:
  - 192.168.56.100-192.168.56.110
- name: production
  protocol: layer2
  auto-assign: false
  avoid-buggy-ips: true
  addresses:
  - 10.10.0.0/24
  - 2001:db8:10::/120
  - 10.10.1.7/32
  - 10.10.2.1-10.10.2.1
`

func TestParseMetalLBConfig(t *testing.T) {
	cfg, err := Parse([]byte(metallbConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := []ipam.Pool{
		{Name: "default", AutoAssign: true, Ranges: []ipam.Range{rng("192.168.56.100", "192.168.56.110")}},
		{Name: "production", AvoidBuggyIPs: true, Ranges: []ipam.Range{
			rng("10.10.0.0", "10.10.0.255"), rng("2001:db8:10::", "2001:db8:10::ff"), rng("10.10.1.7", "10.10.1.7"), rng("10.10.2.1", "10.10.2.1"),
		}},
	}
	if diff := cmp.Diff(want, cfg.IPAM(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("pools (-want +got):\n%s", diff)
	}
}

func rng(a, b string) ipam.Range {
	return ipam.Range{First: netip.MustParseAddr(a), Last: netip.MustParseAddr(b)}
}

func TestParseExtensions(t *testing.T) {
	cfg, err := Parse([]byte(`
address-pools:
- name: team
  protocol: layer2
  addresses: [198.51.100.100-198.51.100.110]
  namespaces: [team-a, team-b]
  interfaces: [eth0, bond0.100]
  refresh-interval: 30s
  node-selectors:
  - match-labels:
      rack: r1
  - match-expressions:
    - {key: zone, operator: In, values: [a, b]}
    - {key: spot, operator: DoesNotExist}
`))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := cfg.Pool("team")
	if !ok {
		t.Fatal("pool team missing")
	}
	if !p.Allows("team-b") || p.Allows("default") {
		t.Errorf("namespaces = %v", p.Namespaces)
	}
	if diff := cmp.Diff([]string{"eth0", "bond0.100"}, p.Interfaces); diff != "" {
		t.Errorf("interfaces (-want +got):\n%s", diff)
	}
	if p.Refresh != 30*time.Second {
		t.Errorf("refresh-interval = %v, want 30s", p.Refresh)
	}
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{{`"0"`, -1}, {"0s", -1}, {"0", -1}, {"1s", time.Second}, {"1h", time.Hour}, {`" 2m "`, 2 * time.Minute}} {
		c, err := Parse([]byte("address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.0/28], refresh-interval: " + tt.in + "}\n"))
		if err != nil {
			t.Errorf("refresh-interval %s: %v", tt.in, err)
			continue
		}
		if c.Pools[0].Refresh != tt.want {
			t.Errorf("refresh-interval %s = %v, want %v", tt.in, c.Pools[0].Refresh, tt.want)
		}
	}
	if c, _ := Parse([]byte("address-pools:\n- {name: p, protocol: layer2, addresses: [198.51.100.0/28]}\n")); c.Pools[0].Refresh != 0 {
		t.Errorf("no refresh-interval: %v, want 0 (the speaker's default)", c.Pools[0].Refresh)
	}
	for _, tt := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"rack": "r1"}, true},
		{map[string]string{"rack": "r2"}, false},
		{map[string]string{"zone": "a"}, true},
		{map[string]string{"zone": "a", "spot": "true"}, false},
		{map[string]string{"zone": "c"}, false},
		{nil, false},
	} {
		if got := p.MatchesNode(tt.labels); got != tt.want {
			t.Errorf("MatchesNode(%v) = %v, want %v", tt.labels, got, tt.want)
		}
	}
	noSel := Pool{}
	if !noSel.MatchesNode(nil) {
		t.Error("a pool without selectors must allow every node")
	}
}

func TestSelectorOperators(t *testing.T) {
	labels := map[string]string{"a": "1"}
	for _, tt := range []struct {
		op     string
		key    string
		values []string
		want   bool
	}{
		{api.OpIn, "a", []string{"1", "2"}, true},
		{api.OpIn, "a", []string{"2"}, false},
		{api.OpIn, "b", []string{"1"}, false},
		{api.OpNotIn, "a", []string{"2"}, true},
		{api.OpNotIn, "a", []string{"1"}, false},
		{api.OpNotIn, "b", []string{"1"}, true},
		{api.OpExists, "a", nil, true},
		{api.OpExists, "b", nil, false},
		{api.OpDoesNotExist, "b", nil, true},
		{api.OpDoesNotExist, "a", nil, false},
		{"Gt", "a", []string{"0"}, false},
	} {
		s := Selector{MatchExpressions: []api.SelectorRequirement{{Key: tt.key, Operator: tt.op, Values: tt.values}}}
		if got := s.Matches(labels); got != tt.want {
			t.Errorf("%s %s %v on %v = %v, want %v", tt.key, tt.op, tt.values, labels, got, tt.want)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	for _, text := range []string{"", "  \n", "address-pools: []", "address-pools:", "# only a comment\n"} {
		cfg, err := Parse([]byte(text))
		if err != nil || len(cfg.Pools) != 0 {
			t.Errorf("Parse(%q) = %v, %v; want a config without pools", text, cfg, err)
		}
	}
}

// pool wraps pool fields in a one-pool config.
func pool(fields string) string {
	return "address-pools:\n- name: p\n  protocol: layer2\n" + fields
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		// want lists substrings that must all appear in one problem.
		want [][]string
	}{
		{"invalid yaml", "address-pools:\n- name: [", [][]string{{"invalid YAML"}}},
		{"duplicate key", pool("  addresses: [10.0.0.0/24]\n  addresses: [10.0.1.0/24]"), [][]string{{"invalid YAML", "addresses"}}},
		{"not a mapping", "- a\n- b", [][]string{{"config", "a list"}}},
		{"top-level typo", "adress-pools: []", [][]string{{`"adress-pools"`, `did you mean "address-pools"`}}},
		{"pool typo", pool("  adresses: [10.0.0.0/24]"), [][]string{{`pool "p"`, `"adresses"`, `did you mean "addresses"`}, {`pool "p"`, "addresses", "missing"}}},
		{"unknown key far from any", pool("  addresses: [10.0.0.0/24]\n  colour: blue"), [][]string{{`"colour"`, "known fields are"}}},
		{"missing name", "address-pools:\n- protocol: layer2\n  addresses: [10.0.0.0/24]", [][]string{{"address-pools[0]", "name", "missing"}}},
		{"empty name", "address-pools:\n- name: ''\n  protocol: layer2\n  addresses: [10.0.0.0/24]", [][]string{{"address-pools[0]", "name", "empty"}}},
		{"numeric name", "address-pools:\n- name: 7\n  protocol: layer2\n  addresses: [10.0.0.0/24]", [][]string{{"name", "number 7"}}},
		{"duplicate name", pool("  addresses: [10.0.0.0/24]\n") + "- name: p\n  protocol: layer2\n  addresses: [10.0.1.0/24]", [][]string{{`address-pools[1] (pool "p")`, `"p"`, "address-pools[0]", "unique"}}},
		{"missing addresses", pool(""), [][]string{{`pool "p"`, "addresses", "missing"}}},
		{"empty addresses", pool("  addresses: []"), [][]string{{`pool "p"`, "addresses", "empty"}}},
		{"addresses not a list", pool("  addresses: 10.0.0.0/24"), [][]string{{`pool "p"`, "addresses", "must be a list", `"10.0.0.0/24"`}}},
		{"malformed cidr", pool("  addresses: [10.0.0.300/24]"), [][]string{{`pool "p"`, "addresses[0]", `"10.0.0.300/24"`}}},
		{"malformed range", pool("  addresses: [10.0.0.1-banana]"), [][]string{{`pool "p"`, "addresses[0]", `"10.0.0.1-banana"`}}},
		{"bare address", pool("  addresses: [10.0.0.1]"), [][]string{{`pool "p"`, "addresses[0]", `"10.0.0.1"`, "10.0.0.1/32"}}},
		{"start after end", pool("  addresses: [10.0.0.9-10.0.0.1]"), [][]string{{`pool "p"`, "addresses[0]", `"10.0.0.9-10.0.0.1"`, "starts after it ends"}}},
		{"mixed families", pool("  addresses: [10.0.0.1-2001:db8::1]"), [][]string{{`pool "p"`, "addresses[0]", `"10.0.0.1-2001:db8::1"`, "IPv4 and IPv6"}}},
		{"overlap within a pool", pool("  addresses: [10.0.0.0/24, 10.0.0.128-10.0.1.5]"), [][]string{{`pool "p"`, "10.0.0.0-10.0.0.255", "10.0.0.128-10.0.1.5", "same pool"}}},
		{"overlap across pools", pool("  addresses: [10.0.0.0/24]\n") + "- name: q\n  protocol: layer2\n  addresses: [10.0.0.255/32]", [][]string{{`pool "p"`, "10.0.0.255", `pool "q"`, "overlaps"}}},
		{"bgp protocol", strings.Replace(pool("  addresses: [10.0.0.0/24]"), "layer2", "bgp", 1), [][]string{{`pool "p"`, "protocol", `"bgp"`, "BGP is not supported"}}},
		{"unknown protocol", strings.Replace(pool("  addresses: [10.0.0.0/24]"), "layer2", "layer3", 1), [][]string{{`pool "p"`, "protocol", `"layer3"`, "layer2"}}},
		{"missing protocol", "address-pools:\n- name: p\n  addresses: [10.0.0.0/24]", [][]string{{`pool "p"`, "protocol", "missing"}}},
		{"peers", "peers:\n- peer-address: 10.0.0.1\n  peer-asn: 64501\n  my-asn: 64500\n" + pool("  addresses: [10.0.0.0/24]"), [][]string{{"peers", "BGP is not supported"}}},
		{"bgp-communities", "bgp-communities:\n  no-advertise: 65535:65282\n" + pool("  addresses: [10.0.0.0/24]"), [][]string{{"bgp-communities", "BGP is not supported"}}},
		{"bgp-advertisements", pool("  addresses: [10.0.0.0/24]\n  bgp-advertisements: [{aggregation-length: 32}]"), [][]string{{`pool "p"`, "bgp-advertisements", "BGP is not supported"}}},
		{"auto-assign not bool", pool("  addresses: [10.0.0.0/24]\n  auto-assign: \"no\""), [][]string{{`pool "p"`, "auto-assign", `"no"`, "true or false"}}},
		{"bad namespace", pool("  addresses: [10.0.0.0/24]\n  namespaces: [Team_A]"), [][]string{{`pool "p"`, "namespaces[0]", `"Team_A"`}}},
		{"bad interface", pool("  addresses: [10.0.0.0/24]\n  interfaces: [averyveryverylongname0]"), [][]string{{`pool "p"`, "interfaces[0]", `"averyveryverylongname0"`}}},
		{"refresh not a duration", pool("  addresses: [10.0.0.0/24]\n  refresh-interval: often"), [][]string{{`pool "p"`, "refresh-interval", `"often"`, `"0" to turn refreshing off`}}},
		{"refresh without unit", pool("  addresses: [10.0.0.0/24]\n  refresh-interval: 30"), [][]string{{`pool "p"`, "refresh-interval", "30 has no unit"}}},
		{"refresh too fast", pool("  addresses: [10.0.0.0/24]\n  refresh-interval: 100ms"), [][]string{{`pool "p"`, "refresh-interval", "100ms is out of range", "between 1s and 1h"}}},
		{"refresh too slow", pool("  addresses: [10.0.0.0/24]\n  refresh-interval: 2h"), [][]string{{`pool "p"`, "refresh-interval", "2h0m0s is out of range"}}},
		{"refresh a list", pool("  addresses: [10.0.0.0/24]\n  refresh-interval: [1s]"), [][]string{{`pool "p"`, "refresh-interval", "must be a duration"}}},
		{"selector typo", pool("  addresses: [10.0.0.0/24]\n  node-selectors:\n  - match-label: {a: b}"), [][]string{{`pool "p"`, "node-selectors[0]", `"match-label"`, `did you mean "match-labels"`}}},
		{"selector bad operator", pool("  addresses: [10.0.0.0/24]\n  node-selectors:\n  - match-expressions: [{key: a, operator: Equals, values: [b]}]"), [][]string{{`pool "p"`, "match-expressions[0].operator", `"Equals"`, "In, NotIn"}}},
		{"selector In without values", pool("  addresses: [10.0.0.0/24]\n  node-selectors:\n  - match-expressions: [{key: a, operator: In}]"), [][]string{{`pool "p"`, "match-expressions[0].values", "In needs"}}},
		{"selector Exists with values", pool("  addresses: [10.0.0.0/24]\n  node-selectors:\n  - match-expressions: [{key: a, operator: Exists, values: [x]}]"), [][]string{{"Exists takes no values"}}},
		{"selector label not a string", pool("  addresses: [10.0.0.0/24]\n  node-selectors:\n  - match-labels: {ssd: true}"), [][]string{{`pool "p"`, "match-labels.ssd", "boolean true", "quote it"}}},
		{"pool not a mapping", "address-pools:\n- default", [][]string{{"address-pools[0]", `"default"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.text))
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("Parse succeeded or returned %T (%v), want *Error", err, err)
			}
			for _, want := range tt.want {
				if !hasProblem(cerr, want) {
					t.Errorf("no problem mentions all of %q; got:\n%v", want, err)
				}
			}
		})
	}
}

func hasProblem(e *Error, parts []string) bool {
	for _, p := range e.Problems {
		s := p.String()
		ok := true
		for _, w := range parts {
			ok = ok && strings.Contains(s, w)
		}
		if ok {
			return true
		}
	}
	return false
}

// Every problem is reported, not only the first.
func TestParseReportsEverything(t *testing.T) {
	_, err := Parse([]byte(`
address-pools:
- name: a
  protocol: bgp
  adresses: [10.0.0.0/24]
- name: b
  protocol: layer2
  addresses: [10.0.0.300/24, 10.1.0.0/24, 10.1.0.9-10.1.0.1]
- protocol: layer2
  addresses: [10.2.0.0/24]
`))
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("got %v", err)
	}
	want := []string{
		`address-pools[0] (pool "a"): adresses: unknown field "adresses"; did you mean "addresses"?`,
		`address-pools[0] (pool "a"): protocol: "bgp": ` + bgpUnsupported + `; set protocol: layer2`,
		`address-pools[0] (pool "a"): addresses: missing; list at least one CIDR (192.168.1.0/24) or range (192.168.1.10-192.168.1.20)`,
		`address-pools[1] (pool "b"): addresses[0]: invalid CIDR "10.0.0.300/24": IPv4 field has value >255`,
		`address-pools[1] (pool "b"): addresses[2]: range "10.1.0.9-10.1.0.1" starts after it ends; write it as 10.1.0.1-10.1.0.9`,
		`address-pools[2]: name: missing; every pool needs a unique name`,
	}
	var got []string
	for _, p := range cerr.Problems {
		got = append(got, p.String())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestFromFile(t *testing.T) {
	manifest := `# The walkthrough's ConfigMap, with a Namespace before it.
apiVersion: v1
kind: Namespace
metadata:
  name: ironlb-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  namespace: ironlb-system
  name: config
data:
  config: |
    address-pools:
    - name: default
      protocol: layer2
      addresses:
      - 192.168.56.100-192.168.56.110
`
	src, err := FromFile([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if src.Namespace != "ironlb-system" || src.Name != "config" || !strings.Contains(string(src.Text), "192.168.56.100-192.168.56.110") {
		t.Errorf("FromFile = %+v", src)
	}
	if _, err := Parse(src.Text); err != nil {
		t.Errorf("Parse of the extracted text: %v", err)
	}
	bare, err := FromFile([]byte(metallbConfig))
	if err != nil || bare.Name != "" || string(bare.Text) != metallbConfig {
		t.Errorf("bare text: %+v, %v", bare, err)
	}
	for _, tt := range []struct{ text, want string }{
		{"kind: ConfigMap\nmetadata: {name: config}\ndata: {conf: x}", `has no data key "config"`},
		{"kind: Service\nmetadata: {name: x}", "no ConfigMap"},
		{"kind: ConfigMap\nmetadata: {name: a}\ndata: {config: x}\n---\nkind: ConfigMap\nmetadata: {name: b}\ndata: {config: y}", "2 ConfigMaps"},
	} {
		if _, err := FromFile([]byte(tt.text)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("FromFile(%q) = %v, want an error with %q", tt.text, err, tt.want)
		}
	}
}

// The example shipped in manifests/ must always be valid.
func TestExampleConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "manifests", "example-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := FromFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(src.Text); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	seeds := []string{metallbConfig, "", "address-pools: []", "peers: [1]", "- a", "address-pools:\n- name: [",
		pool("  addresses: [10.0.0.0/24, 2001:db8::/64]\n  node-selectors:\n  - match-expressions: [{key: a, operator: In, values: [b]}]\n  namespaces: [x]"),
		pool("  addresses: [10.0.0.0/24]\n  node-selectors: [{match-labels: {a: 1}}, 7, {match-expressions: [1, {key: 2}]}]"),
		pool("  addresses: [10.0.0.0/24]\n  namespaces: 5\n  interfaces: [1]\n  auto-assign: 7"),
		"address-pools: {a: b}", "address-pools: [null, {name: null}]", "&a [*a]"}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			var cerr *Error
			if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
				t.Fatalf("Parse error %v is not a non-empty *Error", err)
			}
			return
		}
		// A config Parse accepts must be one the allocator accepts.
		if _, err := ipam.New().SetPools(cfg.IPAM()); err != nil {
			t.Fatalf("Parse accepted pools the allocator refuses: %v", err)
		}
	})
}

func FuzzFromFile(f *testing.F) {
	f.Add([]byte("kind: ConfigMap\nmetadata: {name: config}\ndata: {config: 'address-pools: []'}\n---\n---x\n"))
	f.Add([]byte(metallbConfig))
	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := FromFile(data)
		if err == nil {
			Parse(src.Text)
		}
	})
}
