// Package metallb converts MetalLB v0.13+ custom resources (IPAddressPool
// and L2Advertisement, group metallb.io) into an ironlb address-pool
// config, for `kubectl ironlb import-metallb`.
//
// The conversion is pure: Parse reads YAML manifests into Objects, Convert
// maps them to an api.Config and lists, with a reason, every field it could
// not carry over. What maps:
//
//   - IPAddressPool spec.addresses, autoAssign and avoidBuggyIPs become the
//     pool's addresses, auto-assign and avoid-buggy-ips;
//   - spec.serviceAllocation.namespaces becomes the pool's namespaces;
//   - the nodeSelectors and interfaces of the L2Advertisements that select
//     a pool (by name, by label, or all pools when they name none) become
//     the pool's node-selectors and interfaces.
//
// Everything BGP, serviceAllocation's priority, namespaceSelectors and
// serviceSelectors, and anything unknown is reported, never dropped
// silently.
package metallb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/config"
)

// Group is MetalLB's API group; Version the version of the two kinds
// converted here.
const (
	Group   = "metallb.io"
	Version = "v1beta1"
)

// Object is one MetalLB object read from a manifest or from the cluster.
// Kinds other than IPAddressPool and L2Advertisement keep only their name,
// so Convert can say why they were not converted.
type Object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace,omitempty"`
		Labels    map[string]string `json:"labels,omitempty"`
	} `json:"metadata"`
	Pool *PoolSpec `json:"-"`
	L2   *L2Spec   `json:"-"`
	// Unknown lists the spec fields this converter does not know, for the
	// report.
	Unknown []string `json:"-"`
}

// PoolSpec is the spec of an IPAddressPool.
type PoolSpec struct {
	Addresses         []string           `json:"addresses"`
	AutoAssign        *bool              `json:"autoAssign,omitempty"`
	AvoidBuggyIPs     bool               `json:"avoidBuggyIPs,omitempty"`
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`
}

// ServiceAllocation limits which Services may draw from a pool.
type ServiceAllocation struct {
	Priority           int             `json:"priority,omitempty"`
	Namespaces         []string        `json:"namespaces,omitempty"`
	NamespaceSelectors []LabelSelector `json:"namespaceSelectors,omitempty"`
	ServiceSelectors   []LabelSelector `json:"serviceSelectors,omitempty"`
}

// L2Spec is the spec of an L2Advertisement.
type L2Spec struct {
	IPAddressPools         []string        `json:"ipAddressPools,omitempty"`
	IPAddressPoolSelectors []LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	NodeSelectors          []LabelSelector `json:"nodeSelectors,omitempty"`
	Interfaces             []string        `json:"interfaces,omitempty"`
}

// LabelSelector is a Kubernetes label selector as MetalLB's CRDs spell it.
type LabelSelector struct {
	MatchLabels      map[string]string `json:"matchLabels,omitempty"`
	MatchExpressions []struct {
		Key      string   `json:"key"`
		Operator string   `json:"operator"`
		Values   []string `json:"values,omitempty"`
	} `json:"matchExpressions,omitempty"`
}

// Ref names an object for messages: "IPAddressPool metallb-system/first-pool".
func (o *Object) Ref() string {
	if o.Metadata.Namespace == "" {
		return o.Kind + " " + o.Metadata.Name
	}
	return o.Kind + " " + o.Metadata.Namespace + "/" + o.Metadata.Name
}

var (
	poolFields  = []string{"addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation"}
	allocFields = []string{"priority", "namespaces", "namespaceSelectors", "serviceSelectors"}
	l2Fields    = []string{"ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors", "interfaces"}
)

// Parse reads MetalLB objects from YAML: one or more documents separated by
// "---", each an object or a List of objects (as `kubectl get -o yaml`
// writes). Documents that are not Kubernetes objects are an error naming
// the document; objects of other groups are skipped, since a manifest
// often carries a Namespace or Deployment too.
func Parse(data []byte) ([]Object, error) {
	var out []Object
	for i, doc := range config.SplitDocuments(data) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: invalid YAML: %v", i+1, err)
		}
		objs, err := decode(js)
		if err != nil {
			return nil, fmt.Errorf("document %d: %v", i+1, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// Decode reads one object (or List) already in JSON, as the dynamic client
// returns it.
func Decode(js []byte) ([]Object, error) { return decode(js) }

func decode(js []byte) ([]Object, error) {
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(js, &raw); err != nil {
		return nil, fmt.Errorf("not a Kubernetes object (want a mapping with apiVersion and kind): %v", err)
	}
	var head Object
	if err := json.Unmarshal(js, &head); err != nil {
		return nil, fmt.Errorf("cannot read apiVersion, kind and metadata: %v", err)
	}
	if head.Kind == "" {
		return nil, fmt.Errorf("no kind: want MetalLB IPAddressPool and L2Advertisement objects")
	}
	if strings.HasSuffix(head.Kind, "List") {
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(js, &list); err != nil {
			return nil, fmt.Errorf("%s: items: %v", head.Kind, err)
		}
		var out []Object
		for j, item := range list.Items {
			objs, err := decode(item)
			if err != nil {
				return nil, fmt.Errorf("%s item %d: %v", head.Kind, j, err)
			}
			out = append(out, objs...)
		}
		return out, nil
	}
	group, _, _ := strings.Cut(head.APIVersion, "/")
	if group != Group {
		return nil, nil
	}
	spec := map[string]json.RawMessage{}
	if s, ok := raw["spec"]; ok && !bytes.Equal(bytes.TrimSpace(s), []byte("null")) {
		if err := json.Unmarshal(s, &spec); err != nil {
			return nil, fmt.Errorf("%s: spec must be a mapping: %v", head.Ref(), err)
		}
	}
	switch head.Kind {
	case "IPAddressPool":
		head.Pool = &PoolSpec{}
		if err := decodeSpec(raw["spec"], head.Pool); err != nil {
			return nil, fmt.Errorf("%s: spec: %v", head.Ref(), err)
		}
		head.Unknown = unknown(spec, poolFields, "spec.")
		if a, ok := spec["serviceAllocation"]; ok {
			alloc := map[string]json.RawMessage{}
			if json.Unmarshal(a, &alloc) == nil {
				head.Unknown = append(head.Unknown, unknown(alloc, allocFields, "spec.serviceAllocation.")...)
			}
		}
	case "L2Advertisement":
		head.L2 = &L2Spec{}
		if err := decodeSpec(raw["spec"], head.L2); err != nil {
			return nil, fmt.Errorf("%s: spec: %v", head.Ref(), err)
		}
		head.Unknown = unknown(spec, l2Fields, "spec.")
	}
	return []Object{head}, nil
}

// decodeSpec decodes spec into v. Unknown fields are tolerated here and
// reported by the caller; a known field of the wrong type is an error.
func decodeSpec(spec json.RawMessage, v any) error {
	if len(spec) == 0 {
		return nil
	}
	return json.Unmarshal(spec, v)
}

func unknown(m map[string]json.RawMessage, known []string, prefix string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(known, k) {
			out = append(out, prefix+k)
		}
	}
	return out
}

// Unmapped is something of the MetalLB objects that the ironlb config does
// not carry, and why.
type Unmapped struct {
	// Object is "Kind namespace/name".
	Object string `json:"object"`
	// Field is the field path, empty for a whole object.
	Field string `json:"field,omitempty"`
	// Reason says what ironlb does instead and what to do about it.
	Reason string `json:"reason"`
}

func (u Unmapped) String() string {
	if u.Field == "" {
		return u.Object + ": " + u.Reason
	}
	return u.Object + ": " + u.Field + ": " + u.Reason
}

// Result is a conversion.
type Result struct {
	// Config is the ironlb config, valid for config.Parse when Err is nil.
	Config api.Config `json:"config"`
	// Unmapped lists what was not carried over, in input order.
	Unmapped []Unmapped `json:"unmapped,omitempty"`
}

const bgpReason = "BGP is not supported: ironlb announces addresses on the local network with ARP and NDP (layer 2) only, so clients that reach these addresses through a BGP router today must be on the nodes' LAN, or routed to it"

// Convert maps MetalLB objects to an ironlb config. The config is checked
// with config.Parse; a config ironlb would reject (overlapping pools, bad
// addresses, a selector operator ironlb does not know) is returned with
// the error, which names every problem.
func Convert(objs []Object) (*Result, error) {
	r := &Result{}
	var pools, l2s []*Object
	for i := range objs {
		o := &objs[i]
		switch {
		case o.Pool != nil:
			pools = append(pools, o)
		case o.L2 != nil:
			l2s = append(l2s, o)
		case o.Kind == "BGPAdvertisement" || o.Kind == "BGPPeer" || o.Kind == "BFDProfile" || o.Kind == "Community":
			r.Unmapped = append(r.Unmapped, Unmapped{Object: o.Ref(), Reason: bgpReason})
		default:
			r.Unmapped = append(r.Unmapped, Unmapped{Object: o.Ref(), Reason: "not an address pool or a layer-2 advertisement; ironlb has no counterpart, so it is left out"})
		}
		for _, f := range o.Unknown {
			r.Unmapped = append(r.Unmapped, Unmapped{Object: o.Ref(), Field: f, Reason: "not a field of MetalLB " + Version + " " + o.Kind + " that this converter knows; check what it does and configure ironlb by hand if it matters"})
		}
	}

	// Which advertisements apply to which pool.
	adv := map[string][]*Object{}
	for _, l := range l2s {
		sels := make([]config.Selector, 0, len(l.L2.IPAddressPoolSelectors))
		for j, s := range l.L2.IPAddressPoolSelectors {
			sel, err := selector(s)
			if err != nil {
				return nil, fmt.Errorf("%s: spec.ipAddressPoolSelectors[%d]: %v", l.Ref(), j, err)
			}
			sels = append(sels, sel)
		}
		for _, name := range l.L2.IPAddressPools {
			if !slices.ContainsFunc(pools, func(p *Object) bool { return p.Metadata.Name == name }) {
				r.Unmapped = append(r.Unmapped, Unmapped{Object: l.Ref(), Field: "spec.ipAddressPools", Reason: fmt.Sprintf("names IPAddressPool %q, which is not among the objects given; include it to convert it", name)})
			}
		}
		all := len(l.L2.IPAddressPools) == 0 && len(l.L2.IPAddressPoolSelectors) == 0
		for _, p := range pools {
			match := all || slices.Contains(l.L2.IPAddressPools, p.Metadata.Name) ||
				slices.ContainsFunc(sels, func(s config.Selector) bool { return s.Matches(p.Metadata.Labels) })
			if match {
				adv[p.Metadata.Name] = append(adv[p.Metadata.Name], l)
			}
		}
	}

	for _, p := range pools {
		ap, err := pool(p, adv[p.Metadata.Name], r)
		if err != nil {
			return nil, err
		}
		r.Config.AddressPools = append(r.Config.AddressPools, ap)
	}
	text, err := r.Text()
	if err != nil {
		return nil, err
	}
	if _, err := config.Parse(text); err != nil {
		return r, fmt.Errorf("the converted config would be rejected by ironlb:\n%v", err)
	}
	return r, nil
}

func pool(p *Object, advs []*Object, r *Result) (api.AddressPool, error) {
	ref := p.Ref()
	note := func(field, format string, args ...any) {
		r.Unmapped = append(r.Unmapped, Unmapped{Object: ref, Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	ap := api.AddressPool{
		Name:          p.Metadata.Name,
		Protocol:      api.ProtocolLayer2,
		Addresses:     slices.Clone(p.Pool.Addresses),
		AvoidBuggyIPs: p.Pool.AvoidBuggyIPs,
	}
	if p.Pool.AutoAssign != nil && !*p.Pool.AutoAssign {
		ap.AutoAssign = new(bool)
	}
	if sa := p.Pool.ServiceAllocation; sa != nil {
		ap.Namespaces = slices.Clone(sa.Namespaces)
		if sa.Priority != 0 {
			note("spec.serviceAllocation.priority", "ironlb has no pool priorities: auto-assign pools are tried in order of their names (the lowest free address first); rename the pools to keep this order")
		}
		// MetalLB gives a pool with serviceSelectors only to the selected
		// Services, and one with namespaceSelectors only to the selected
		// namespaces. An auto-assign ironlb pool would hand its addresses
		// to any Service (in its namespaces), so the converted pool serves
		// only Services that ask for it by name or address.
		narrowed := len(sa.ServiceSelectors) > 0 || len(sa.NamespaceSelectors) > 0 && len(ap.Namespaces) == 0
		if len(sa.NamespaceSelectors) > 0 {
			note("spec.serviceAllocation.namespaceSelectors", "ironlb restricts a pool to namespaces by name only; list the namespaces these selectors match under the pool's namespaces")
		}
		if len(sa.ServiceSelectors) > 0 {
			note("spec.serviceAllocation.serviceSelectors", "ironlb cannot restrict a pool by Service labels; annotate those Services with %s: %s instead", api.AnnotationAddressPool, p.Metadata.Name)
		}
		if narrowed && ap.AutoAssign == nil {
			ap.AutoAssign = new(bool)
			note("spec.serviceAllocation", "set auto-assign: false on the converted pool, so that its addresses go only to Services that name the pool or an address in it, not to every Service")
		}
	}

	if len(advs) == 0 {
		note("", "no L2Advertisement selects this pool, so MetalLB does not announce its addresses in layer 2 mode (perhaps only by BGP); ironlb will announce them with ARP/NDP")
		return ap, nil
	}
	allNodes, allIfaces := false, false
	var names []string
	for _, a := range advs {
		names = append(names, a.Metadata.Name)
		if len(a.L2.NodeSelectors) == 0 {
			allNodes = true
		}
		if len(a.L2.Interfaces) == 0 {
			allIfaces = true
		}
	}
	if !allNodes {
		for _, a := range advs {
			for j, s := range a.L2.NodeSelectors {
				if _, err := selector(s); err != nil {
					return ap, fmt.Errorf("%s: spec.nodeSelectors[%d]: %v", a.Ref(), j, err)
				}
				ns := api.NodeSelector{MatchLabels: maps.Clone(s.MatchLabels)}
				for _, e := range s.MatchExpressions {
					ns.MatchExpressions = append(ns.MatchExpressions, api.SelectorRequirement{Key: e.Key, Operator: e.Operator, Values: slices.Clone(e.Values)})
				}
				if !slices.ContainsFunc(ap.NodeSelectors, func(x api.NodeSelector) bool { return equalSelector(x, ns) }) {
					ap.NodeSelectors = append(ap.NodeSelectors, ns)
				}
			}
		}
	}
	if !allIfaces {
		for _, a := range advs {
			for _, ifn := range a.L2.Interfaces {
				if !slices.Contains(ap.Interfaces, ifn) {
					ap.Interfaces = append(ap.Interfaces, ifn)
				}
			}
		}
	}
	// ironlb keeps one set of nodes and one set of interfaces per pool.
	// Several advertisements that pair different nodes with different
	// interfaces are merged into their union, which lets every selected
	// node answer on every listed interface.
	if len(advs) > 1 && len(ap.NodeSelectors) > 0 && len(ap.Interfaces) > 0 {
		note("", "L2Advertisements %s pair different nodes with different interfaces; ironlb keeps one list of each per pool, so the converted pool lets every selected node answer on every listed interface", strings.Join(names, ", "))
	}
	return ap, nil
}

// selector checks a MetalLB label selector and returns it in the form
// ironlb matches labels with.
func selector(s LabelSelector) (config.Selector, error) {
	out := config.Selector{MatchLabels: s.MatchLabels}
	for i, e := range s.MatchExpressions {
		switch e.Operator {
		case api.OpIn, api.OpNotIn:
			if len(e.Values) == 0 {
				return out, fmt.Errorf("matchExpressions[%d]: operator %s needs values", i, e.Operator)
			}
		case api.OpExists, api.OpDoesNotExist:
		default:
			return out, fmt.Errorf("matchExpressions[%d]: unknown operator %q; use In, NotIn, Exists or DoesNotExist", i, e.Operator)
		}
		if e.Key == "" {
			return out, fmt.Errorf("matchExpressions[%d]: key is empty", i)
		}
		out.MatchExpressions = append(out.MatchExpressions, api.SelectorRequirement{Key: e.Key, Operator: e.Operator, Values: e.Values})
	}
	return out, nil
}

func equalSelector(a, b api.NodeSelector) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// Text renders the config as the YAML stored under the ConfigMap's config
// key.
func (r *Result) Text() ([]byte, error) {
	if len(r.Config.AddressPools) == 0 {
		return []byte("address-pools: []\n"), nil
	}
	return yaml.Marshal(r.Config)
}

// ConfigMap renders the ironlb ConfigMap manifest holding the config.
func (r *Result) ConfigMap(namespace, name string) ([]byte, error) {
	text, err := r.Text()
	if err != nil {
		return nil, err
	}
	cm := map[string]any{
		"apiVersion": "v1",
		"kind":       "ConfigMap",
		"metadata":   map[string]any{"namespace": namespace, "name": name},
		"data":       map[string]string{api.ConfigKey: string(text)},
	}
	return yaml.Marshal(cm)
}
