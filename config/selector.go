package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ironlb/ironlb/api"
)

// Selector is a validated node selector.
type Selector struct {
	MatchLabels      map[string]string
	MatchExpressions []api.SelectorRequirement
}

// Matches reports whether a node with these labels satisfies every label
// and expression of s.
func (s *Selector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := labels[e.Key]
		switch e.Operator {
		case api.OpIn:
			if !ok || !slices.Contains(e.Values, v) {
				return false
			}
		case api.OpNotIn:
			if ok && slices.Contains(e.Values, v) {
				return false
			}
		case api.OpExists:
			if !ok {
				return false
			}
		case api.OpDoesNotExist:
			if ok {
				return false
			}
		default:
			// Parse refuses other operators; never match on one anyway.
			return false
		}
	}
	return true
}

// MatchesNode reports whether a node with these labels may announce the
// pool's addresses: any selector matching is enough, and a pool without
// selectors allows every node.
func (p *Pool) MatchesNode(labels map[string]string) bool {
	if len(p.NodeSelectors) == 0 {
		return true
	}
	for i := range p.NodeSelectors {
		if p.NodeSelectors[i].Matches(labels) {
			return true
		}
	}
	return false
}

var operators = []string{api.OpIn, api.OpNotIn, api.OpExists, api.OpDoesNotExist}

func (ps *parser) selectors(path string, raw any) []Selector {
	if raw == nil {
		return nil
	}
	list, ok := raw.([]any)
	if !ok {
		ps.add(path, "node-selectors", "must be a list of selectors, not %s", describe(raw))
		return nil
	}
	var out []Selector
	for i, item := range list {
		field := fmt.Sprintf("node-selectors[%d]", i)
		m, ok := item.(map[string]any)
		if !ok {
			ps.add(path, field, "must be a mapping with match-labels and/or match-expressions, not %s", describe(item))
			continue
		}
		ps.unknownKeys(path+": "+field, m, selKeys)
		sel := Selector{}
		if raw, ok := m["match-labels"]; ok && raw != nil {
			labels, isMap := raw.(map[string]any)
			if !isMap {
				ps.add(path, field+".match-labels", "must be a mapping of label to value, not %s", describe(raw))
			}
			for _, k := range slices.Sorted(maps.Keys(labels)) {
				v, isStr := labels[k].(string)
				if !isStr {
					ps.add(path, field+".match-labels."+k, "must be a string, not %s; quote it, as in %s: \"%v\"", describe(labels[k]), k, labels[k])
					continue
				}
				if sel.MatchLabels == nil {
					sel.MatchLabels = map[string]string{}
				}
				sel.MatchLabels[k] = v
			}
		}
		if raw, ok := m["match-expressions"]; ok && raw != nil {
			exprs, isList := raw.([]any)
			if !isList {
				ps.add(path, field+".match-expressions", "must be a list, not %s", describe(raw))
			}
			for j, e := range exprs {
				if r, ok := ps.expression(path, fmt.Sprintf("%s.match-expressions[%d]", field, j), e); ok {
					sel.MatchExpressions = append(sel.MatchExpressions, r)
				}
			}
		}
		out = append(out, sel)
	}
	return out
}

func (ps *parser) expression(path, field string, raw any) (api.SelectorRequirement, bool) {
	m, ok := raw.(map[string]any)
	if !ok {
		ps.add(path, field, "must be a mapping with key, operator and values, not %s", describe(raw))
		return api.SelectorRequirement{}, false
	}
	before := len(ps.problems)
	ps.unknownKeys(path+": "+field, m, exprKeys)
	var r api.SelectorRequirement
	key, isStr := m["key"].(string)
	if !isStr || key == "" {
		ps.add(path, field+".key", "missing or not a string; name the node label to test")
	}
	r.Key = key
	op, _ := m["operator"].(string)
	if !slices.Contains(operators, op) {
		ps.add(path, field+".operator", "%s is not an operator; use one of %s", quote(m["operator"]), strings.Join(operators, ", "))
	}
	r.Operator = op
	r.Values, _ = ps.strings(path, field+".values", remap(m, "values", field+".values"))
	switch {
	case (op == api.OpIn || op == api.OpNotIn) && len(r.Values) == 0:
		ps.add(path, field+".values", "operator %s needs at least one value", op)
	case (op == api.OpExists || op == api.OpDoesNotExist) && len(r.Values) > 0:
		ps.add(path, field+".values", "operator %s takes no values; remove values", op)
	}
	return r, len(ps.problems) == before
}

// remap exposes m[from] under the key to, so that ps.strings can report the
// full field path of a nested list.
func remap(m map[string]any, from, to string) map[string]any {
	if v, ok := m[from]; ok {
		return map[string]any{to: v}
	}
	return nil
}
