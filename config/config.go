// Package config turns the address-pool ConfigMap's text into a validated
// model. A config is taken whole or not at all: Parse reports every problem
// it finds, each naming the pool, the field and the bad value.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/ipam"
)

// Config is a validated address-pool config.
type Config struct {
	// Pools in the order the config lists them.
	Pools []Pool
}

// Pool is one validated address pool.
type Pool struct {
	ipam.Pool
	// Interfaces limits the NICs the speaker answers on; empty means all.
	Interfaces []string
	// NodeSelectors limits the nodes that may announce; empty means all.
	NodeSelectors []Selector
	// Refresh is the pool's refresh-interval: zero means the speaker's
	// default, negative means off for this pool.
	Refresh time.Duration
}

// IPAM returns the pools as the allocator takes them.
func (c *Config) IPAM() []ipam.Pool {
	out := make([]ipam.Pool, len(c.Pools))
	for i, p := range c.Pools {
		out[i] = p.Pool
	}
	return out
}

// Pool returns the pool with the given name.
func (c *Config) Pool(name string) (*Pool, bool) {
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i], true
		}
	}
	return nil, false
}

// Problem is one thing wrong with a config.
type Problem struct {
	// Path locates the bad value: "address-pools[0] (pool \"default\")".
	Path string
	// Field is the key within Path, with an index for list items.
	Field string
	// Msg names the bad value and says what to do.
	Msg string
}

func (p Problem) String() string {
	switch {
	case p.Path == "":
		return p.Field + ": " + p.Msg
	case p.Field == "":
		return p.Path + ": " + p.Msg
	}
	return p.Path + ": " + p.Field + ": " + p.Msg
}

// Error is every problem found in a config.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// parser collects problems while walking the decoded document.
type parser struct {
	problems []Problem
}

func (ps *parser) add(path, field, format string, args ...any) {
	ps.problems = append(ps.problems, Problem{Path: path, Field: field, Msg: fmt.Sprintf(format, args...)})
}

var (
	topKeys  = []string{"address-pools", "peers", "bgp-communities"}
	poolKeys = []string{"name", "protocol", "addresses", "auto-assign", "avoid-buggy-ips", "bgp-advertisements", "namespaces", "interfaces", "node-selectors", "refresh-interval"}
	selKeys  = []string{"match-labels", "match-expressions"}
	exprKeys = []string{"key", "operator", "values"}

	// A Kubernetes namespace name is a DNS-1123 label.
	namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
)

const bgpUnsupported = "BGP is not supported: ironlb announces addresses on the local network with ARP and NDP (protocol: layer2) only"

// Parse decodes and validates the YAML text stored under the ConfigMap's
// "config" key. Empty text is a valid config without pools. On failure the
// error is an *Error listing every problem.
func Parse(data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return &Config{}, nil
	}
	// Strict conversion refuses duplicate keys, which YAML would otherwise
	// resolve silently by keeping the last one.
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, &Error{[]Problem{{Field: "config", Msg: fmt.Sprintf("invalid YAML: %v", err)}}}
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, &Error{[]Problem{{Field: "config", Msg: fmt.Sprintf("invalid YAML: %v", err)}}}
	}
	ps := &parser{}
	cfg := ps.config(doc)
	if len(ps.problems) > 0 {
		return nil, &Error{ps.problems}
	}
	return cfg, nil
}

func (ps *parser) config(doc any) *Config {
	if doc == nil {
		return &Config{}
	}
	top, ok := doc.(map[string]any)
	if !ok {
		ps.add("", "config", "the config must be a mapping with an address-pools list, not %s", describe(doc))
		return nil
	}
	ps.unknownKeys("", top, topKeys)
	if _, ok := top["peers"]; ok {
		ps.add("", "peers", "%s; remove peers", bgpUnsupported)
	}
	if _, ok := top["bgp-communities"]; ok {
		ps.add("", "bgp-communities", "%s; remove bgp-communities", bgpUnsupported)
	}
	cfg := &Config{}
	raw, ok := top["address-pools"]
	if !ok || raw == nil {
		return cfg
	}
	list, ok := raw.([]any)
	if !ok {
		ps.add("", "address-pools", "must be a list of pools, not %s", describe(raw))
		return cfg
	}
	names := map[string]int{}
	for i, item := range list {
		p, ok := ps.pool(i, item)
		if !ok {
			continue
		}
		if first, dup := names[p.Name]; dup {
			ps.add(poolPath(i, p.Name), "name", "pool name %q is already used by address-pools[%d]; pool names must be unique", p.Name, first)
			continue
		}
		names[p.Name] = i
		cfg.Pools = append(cfg.Pools, p)
	}
	ps.overlaps(cfg.Pools, names)
	return cfg
}

func poolPath(i int, name string) string {
	if name == "" {
		return fmt.Sprintf("address-pools[%d]", i)
	}
	return fmt.Sprintf("address-pools[%d] (pool %q)", i, name)
}

func (ps *parser) pool(i int, item any) (Pool, bool) {
	m, ok := item.(map[string]any)
	if !ok {
		ps.add(poolPath(i, ""), "", "each pool must be a mapping with name, protocol and addresses, not %s", describe(item))
		return Pool{}, false
	}
	name, _ := m["name"].(string)
	path := poolPath(i, name)
	before := len(ps.problems)

	ps.unknownKeys(path, m, poolKeys)
	p := Pool{Pool: ipam.Pool{AutoAssign: true}}
	switch v, ok := m["name"]; {
	case !ok || v == nil:
		ps.add(path, "name", "missing; every pool needs a unique name")
	case name == "":
		if _, isStr := v.(string); isStr {
			ps.add(path, "name", "is empty; every pool needs a unique name")
		} else {
			ps.add(path, "name", "must be a string, not %s", describe(v))
		}
	default:
		p.Name = name
	}

	switch proto, ok := m["protocol"]; {
	case !ok || proto == nil:
		ps.add(path, "protocol", "missing; set protocol: %s", api.ProtocolLayer2)
	case proto == api.ProtocolLayer2:
	case proto == "bgp":
		ps.add(path, "protocol", "%q: %s; set protocol: %s", proto, bgpUnsupported, api.ProtocolLayer2)
	default:
		ps.add(path, "protocol", "unknown protocol %s; the only supported protocol is %s", quote(proto), api.ProtocolLayer2)
	}
	if _, ok := m["bgp-advertisements"]; ok {
		ps.add(path, "bgp-advertisements", "%s; remove bgp-advertisements", bgpUnsupported)
	}

	addrs, present := ps.strings(path, "addresses", m)
	if present && len(addrs) == 0 {
		ps.add(path, "addresses", "is empty; list at least one CIDR (192.168.1.0/24) or range (192.168.1.10-192.168.1.20)")
	} else if !present {
		ps.add(path, "addresses", "missing; list at least one CIDR (192.168.1.0/24) or range (192.168.1.10-192.168.1.20)")
	}
	for j, s := range addrs {
		r, err := ipam.ParseRange(s)
		if err != nil {
			ps.add(path, fmt.Sprintf("addresses[%d]", j), "%v", err)
			continue
		}
		p.Ranges = append(p.Ranges, r)
	}

	if v, ok := ps.boolean(path, "auto-assign", m); ok {
		p.AutoAssign = v
	}
	p.AvoidBuggyIPs, _ = ps.boolean(path, "avoid-buggy-ips", m)

	p.Namespaces, _ = ps.strings(path, "namespaces", m)
	for j, ns := range p.Namespaces {
		if !namespaceRE.MatchString(ns) {
			ps.add(path, fmt.Sprintf("namespaces[%d]", j), "%q is not a valid namespace name (lower-case letters, digits and '-', at most 63 characters)", ns)
		}
	}
	p.Interfaces, _ = ps.strings(path, "interfaces", m)
	for j, ifn := range p.Interfaces {
		if ifn == "" || len(ifn) > 15 || strings.ContainsAny(ifn, "/ \t:") {
			ps.add(path, fmt.Sprintf("interfaces[%d]", j), "%q is not a valid interface name (1-15 characters, no '/', ':' or spaces)", ifn)
		}
	}
	p.NodeSelectors = ps.selectors(path, m["node-selectors"])
	if v, ok := m["refresh-interval"]; ok && v != nil {
		p.Refresh = ps.refresh(path, v)
	}
	return p, len(ps.problems) == before
}

// overlaps reports ranges that overlap within or across pools.
func (ps *parser) overlaps(pools []Pool, index map[string]int) {
	ip := make([]ipam.Pool, len(pools))
	for i, p := range pools {
		ip[i] = p.Pool
	}
	for _, o := range ipam.Overlaps(ip) {
		where := fmt.Sprintf("range %s of pool %q", o.OtherRange, o.OtherPool)
		if o.Pool == o.OtherPool {
			where = fmt.Sprintf("range %s of the same pool", o.OtherRange)
		}
		ps.add(poolPath(index[o.Pool], o.Pool), "addresses", "range %s overlaps %s; an address may belong to one pool only", o.Range, where)
	}
}

// unknownKeys reports keys not in known, suggesting the nearest known one.
func (ps *parser) unknownKeys(path string, m map[string]any, known []string) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if slices.Contains(known, k) {
			continue
		}
		msg := fmt.Sprintf("unknown field %q", k)
		if s := suggest(k, known); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		} else {
			msg += fmt.Sprintf("; known fields are %s", strings.Join(known, ", "))
		}
		ps.add(path, k, "%s", msg)
	}
}

// strings reads an optional list of strings.
func (ps *parser) strings(path, key string, m map[string]any) ([]string, bool) {
	v, ok := m[key]
	if !ok || v == nil {
		return nil, ok
	}
	list, isList := v.([]any)
	if !isList {
		ps.add(path, key, "must be a list, not %s", describe(v))
		return nil, true
	}
	out := make([]string, 0, len(list))
	for j, item := range list {
		s, isStr := item.(string)
		if !isStr {
			ps.add(path, fmt.Sprintf("%s[%d]", key, j), "must be a string, not %s", describe(item))
			continue
		}
		out = append(out, s)
	}
	return out, true
}

// boolean reads an optional boolean.
func (ps *parser) boolean(path, key string, m map[string]any) (bool, bool) {
	v, ok := m[key]
	if !ok || v == nil {
		return false, false
	}
	b, isBool := v.(bool)
	if !isBool {
		ps.add(path, key, "must be true or false, not %s", describe(v))
		return false, false
	}
	return b, true
}

// refresh reads a pool's refresh-interval: a Go duration between
// minRefresh and maxRefresh, or zero (as "0", "0s" or 0) for off, which
// it returns as a negative duration.
func (ps *parser) refresh(path string, v any) time.Duration {
	const hint = `want a duration such as "30s" or "2m" (between 1s and 1h), or "0" to turn refreshing off for this pool`
	var d time.Duration
	switch v := v.(type) {
	case string:
		var err error
		if d, err = time.ParseDuration(strings.TrimSpace(v)); err != nil {
			ps.add(path, "refresh-interval", "%q is not a duration; %s", v, hint)
			return 0
		}
	case json.Number:
		if f, err := v.Float64(); err != nil || f != 0 {
			ps.add(path, "refresh-interval", "%s has no unit; %s", v, hint)
			return 0
		}
	default:
		ps.add(path, "refresh-interval", "must be a duration, not %s; %s", describe(v), hint)
		return 0
	}
	switch {
	case d == 0:
		return -1
	case d < minRefresh || d > maxRefresh:
		ps.add(path, "refresh-interval", "%v is out of range; %s", d, hint)
		return 0
	}
	return d
}

// Bounds of a pool's refresh-interval: faster is noise on the LAN; above
// the switches' MAC ageing time (300 s on most) a quiet node's MAC is
// forgotten between refreshes, which a user with longer ageing may accept,
// but not beyond an hour.
const (
	minRefresh = time.Second
	maxRefresh = time.Hour
)

// describe names a decoded value for an error message.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("the string %q", v)
	case bool:
		return fmt.Sprintf("the boolean %v", v)
	case json.Number:
		return "the number " + v.String()
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%v", v)
}

func quote(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return describe(v)
}

// suggest returns the known key closest to k, if it is close enough to be
// a typo (at most two edits, and fewer than half the key).
func suggest(k string, known []string) string {
	best, bestD := "", 3
	for _, c := range known {
		if d := distance(strings.ToLower(k), c); d < bestD && d*2 < len(c) {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the Levenshtein edit distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Summary describes each pool in one line, for `controller --check-config`:
// name, number of addresses it can hand out, families, and any limits.
func (c *Config) Summary() []string {
	lines := make([]string, 0, len(c.Pools))
	for _, p := range c.Pools {
		total := new(big.Int)
		var fams []string
		for _, f := range p.Families() {
			total.Add(total, p.Size(f))
			fams = append(fams, f.String())
		}
		line := fmt.Sprintf("pool %q: %s addresses, %s", p.Name, total, strings.Join(fams, "+"))
		if !p.AutoAssign {
			line += ", auto-assign off"
		}
		if p.AvoidBuggyIPs {
			line += ", avoiding .0/.255"
		}
		if len(p.Namespaces) > 0 {
			line += ", namespaces " + strings.Join(p.Namespaces, ",")
		}
		if len(p.Interfaces) > 0 {
			line += ", interfaces " + strings.Join(p.Interfaces, ",")
		}
		if len(p.NodeSelectors) > 0 {
			line += fmt.Sprintf(", %d node selector(s)", len(p.NodeSelectors))
		}
		switch {
		case p.Refresh < 0:
			line += ", refresh off"
		case p.Refresh > 0:
			line += ", refresh every " + p.Refresh.String()
		}
		lines = append(lines, line)
	}
	return lines
}
