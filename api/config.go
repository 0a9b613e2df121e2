// Package api holds the user-facing vocabulary of ironlb: the schema of the
// address-pool ConfigMap, the annotation keys, labels and Event reasons. It
// imports only the standard library so every other package can depend on it.
package api

// ConfigKey is the key of the ConfigMap's data that holds the YAML config.
// It is the same key MetalLB v0.11 reads, so a MetalLB ConfigMap moves over
// unchanged apart from its namespace.
const ConfigKey = "config"

// Config is the document stored under ConfigKey.
//
// Peers and BGPCommunities exist only so that a MetalLB BGP config is
// recognised and rejected with a clear message instead of an "unknown key".
type Config struct {
	AddressPools   []AddressPool     `json:"address-pools"`
	Peers          []any             `json:"peers,omitempty"`
	BGPCommunities map[string]string `json:"bgp-communities,omitempty"`
}

// AddressPool is one named set of addresses.
type AddressPool struct {
	// Name identifies the pool in annotations, metrics and errors.
	Name string `json:"name"`
	// Protocol must be ProtocolLayer2.
	Protocol string `json:"protocol"`
	// Addresses are CIDRs ("10.0.0.0/28") or ranges ("10.0.0.1-10.0.0.9").
	Addresses []string `json:"addresses"`
	// AutoAssign lets Services without a pool annotation or requested
	// address draw from this pool. Defaults to true.
	AutoAssign *bool `json:"auto-assign,omitempty"`
	// AvoidBuggyIPs skips IPv4 addresses ending in .0 and .255, which some
	// old firmware mistakes for network or broadcast addresses.
	AvoidBuggyIPs bool `json:"avoid-buggy-ips,omitempty"`
	// BGPAdvertisements is MetalLB's BGP-only field; it is rejected.
	BGPAdvertisements []any `json:"bgp-advertisements,omitempty"`

	// Namespaces, an ironlb extension, restricts the pool to Services in
	// these namespaces. Empty means every namespace.
	Namespaces []string `json:"namespaces,omitempty"`
	// Interfaces, an ironlb extension, limits the NICs the speaker answers
	// ARP/NDP on for this pool's addresses. Empty means every eligible NIC.
	Interfaces []string `json:"interfaces,omitempty"`
	// RefreshInterval, an ironlb extension, is how often the speaker
	// announces this pool's addresses again (a Go duration such as "30s",
	// at least 1s and at most 1h; "0" turns it off for the pool). Empty
	// means the speaker's --refresh-interval (1m).
	RefreshInterval string `json:"refresh-interval,omitempty"`
	// NodeSelectors, an ironlb extension, limits which nodes may announce
	// this pool's addresses. A node qualifies when any selector matches it;
	// empty means every node.
	NodeSelectors []NodeSelector `json:"node-selectors,omitempty"`
}

// ProtocolLayer2 is the only protocol ironlb speaks.
const ProtocolLayer2 = "layer2"

// NodeSelector matches node labels, with the semantics of a Kubernetes
// label selector: every MatchLabels entry and every expression must hold.
type NodeSelector struct {
	MatchLabels      map[string]string     `json:"match-labels,omitempty"`
	MatchExpressions []SelectorRequirement `json:"match-expressions,omitempty"`
}

// SelectorRequirement is one label expression.
type SelectorRequirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Selector operators, spelled as in Kubernetes label selectors.
const (
	OpIn           = "In"
	OpNotIn        = "NotIn"
	OpExists       = "Exists"
	OpDoesNotExist = "DoesNotExist"
)
