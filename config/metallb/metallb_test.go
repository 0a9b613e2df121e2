package metallb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/config"
)

func convertFile(t *testing.T, name string) (*Result, error) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	return Convert(objs)
}

func off() *bool { return new(bool) }

// field is one expected Unmapped entry: the object, the field and a
// fragment of the reason.
type field struct{ object, field, reason string }

func TestConvert(t *testing.T) {
	tests := []struct {
		file     string
		want     []api.AddressPool
		unmapped []field
	}{
		{
			file: "simple.yaml",
			want: []api.AddressPool{{
				Name: "first-pool", Protocol: "layer2",
				Addresses: []string{"192.168.10.0/24", "192.168.9.1-192.168.9.5", "fc00:f853:0ccd:e799::/124"},
			}},
		},
		{
			file: "autoassign.yaml",
			want: []api.AddressPool{
				{Name: "cheap", Protocol: "layer2", Addresses: []string{"192.168.10.0/24"}},
				{Name: "expensive", Protocol: "layer2", Addresses: []string{"42.176.25.64/30"}, AutoAssign: off()},
				{Name: "buggy", Protocol: "layer2", Addresses: []string{"10.10.0.0/23"}, AvoidBuggyIPs: true},
			},
		},
		{
			file: "allocation.yaml",
			want: []api.AddressPool{
				{Name: "tenant", Protocol: "layer2", Addresses: []string{"192.168.20.0/24"}, Namespaces: []string{"namespace-a", "namespace-b"}, AutoAssign: off()},
				{Name: "labelled-only", Protocol: "layer2", Addresses: []string{"192.168.21.0/24"}, AutoAssign: off()},
			},
			unmapped: []field{
				{"IPAddressPool metallb-system/tenant", "spec.serviceAllocation.priority", "order of their names"},
				{"IPAddressPool metallb-system/tenant", "spec.serviceAllocation.namespaceSelectors", "by name only"},
				{"IPAddressPool metallb-system/tenant", "spec.serviceAllocation.serviceSelectors", "ironlb.io/address-pool: tenant"},
				{"IPAddressPool metallb-system/tenant", "spec.serviceAllocation", "auto-assign: false"},
				{"IPAddressPool metallb-system/labelled-only", "spec.serviceAllocation.serviceSelectors", "ironlb.io/address-pool: labelled-only"},
				{"IPAddressPool metallb-system/labelled-only", "spec.serviceAllocation", "auto-assign: false"},
			},
		},
		{
			file: "nodes.yaml",
			want: []api.AddressPool{
				{Name: "first-pool", Protocol: "layer2", Addresses: []string{"192.168.10.0/24"}, NodeSelectors: []api.NodeSelector{
					{MatchLabels: map[string]string{"kubernetes.io/hostname": "NodeA"}},
					{MatchLabels: map[string]string{"kubernetes.io/hostname": "NodeB"}},
				}},
				{Name: "second-pool", Protocol: "layer2", Addresses: []string{"192.168.11.0/24"}, NodeSelectors: []api.NodeSelector{
					{MatchExpressions: []api.SelectorRequirement{{Key: "kubernetes.io/hostname", Operator: "In", Values: []string{"NodeC"}}}},
				}},
				{Name: "third-pool", Protocol: "layer2", Addresses: []string{"192.168.12.0/24"}, Interfaces: []string{"eth3", "eth4"}},
			},
		},
		{
			file: "bgp.yaml",
			want: []api.AddressPool{{Name: "bgp-pool", Protocol: "layer2", Addresses: []string{"192.168.1.240-192.168.1.250"}}},
			unmapped: []field{
				{"BGPPeer metallb-system/sample", "", "BGP is not supported"},
				{"BGPAdvertisement metallb-system/external", "", "BGP is not supported"},
				{"IPAddressPool metallb-system/bgp-pool", "", "no L2Advertisement selects this pool"},
			},
		},
		{
			file: "list.yaml",
			want: []api.AddressPool{{Name: "listed", Protocol: "layer2", Addresses: []string{"198.51.100.100-198.51.100.110"}, Interfaces: []string{"eth0"}}},
			unmapped: []field{
				{"IPAddressPool metallb-system/listed", "spec.futureField", "not a field"},
				{"L2Advertisement metallb-system/listed-l2", "spec.ipAddressPools", `"missing"`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r, err := convertFile(t, tt.file)
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			if diff := cmp.Diff(tt.want, r.Config.AddressPools); diff != "" {
				t.Errorf("pools (-want +got):\n%s", diff)
			}
			if len(r.Unmapped) != len(tt.unmapped) {
				t.Errorf("got %d unmapped entries, want %d:\n%v", len(r.Unmapped), len(tt.unmapped), r.Unmapped)
			}
			for _, w := range tt.unmapped {
				found := false
				for _, u := range r.Unmapped {
					if u.Object == w.object && u.Field == w.field && strings.Contains(u.Reason, w.reason) {
						found = true
					}
				}
				if !found {
					t.Errorf("no unmapped entry %+v in\n%v", w, r.Unmapped)
				}
			}
			// The output must be a config ironlb takes as it is.
			text, err := r.Text()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := config.Parse(text); err != nil {
				t.Errorf("config.Parse of the converted text: %v\n%s", err, text)
			}
			cm, err := r.ConfigMap(api.DefaultNamespace, api.DefaultConfigName)
			if err != nil {
				t.Fatal(err)
			}
			src, err := config.FromFile(cm)
			if err != nil || src.Namespace != api.DefaultNamespace || src.Name != api.DefaultConfigName || string(src.Text) != string(text) {
				t.Errorf("ConfigMap does not carry the config: %+v, %v\n%s", src, err, cm)
			}
		})
	}
}

func TestConvertRefused(t *testing.T) {
	_, err := convertFile(t, "overlap.yaml")
	if err == nil || !strings.Contains(err.Error(), "overlaps") || !strings.Contains(err.Error(), `pool "b"`) {
		t.Fatalf("want an overlap error naming the pools, got %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"not yaml", "a: [\n", "document 1: invalid YAML"},
		{"not an object", "- a\n- b\n", "document 1: not a Kubernetes object"},
		{"no kind", "apiVersion: metallb.io/v1beta1\nmetadata: {name: x}\n", "no kind"},
		{"wrong type", "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: x}\nspec: {addresses: 10.0.0.0/8}\n", "IPAddressPool x: spec"},
		{"second document", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\nkind: [\n", "document 2"},
		{"bad list item", "apiVersion: v1\nkind: List\nitems:\n- 3\n", "List item 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestBadSelector(t *testing.T) {
	in := `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p}
spec: {addresses: [10.0.0.0/30]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l}
spec:
  nodeSelectors:
  - matchExpressions: [{key: a, operator: Gt, values: ["1"]}]
`
	objs, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Convert(objs)
	if err == nil || !strings.Contains(err.Error(), `L2Advertisement l: spec.nodeSelectors[0]: matchExpressions[0]: unknown operator "Gt"`) {
		t.Fatalf("got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		objs, err := Parse(b)
		if err != nil {
			return
		}
		r, err := Convert(objs)
		if err != nil {
			return
		}
		// Whatever converts without error must be a config ironlb takes.
		text, err := r.Text()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.Parse(text); err != nil {
			t.Fatalf("Convert returned no error but config.Parse refuses its text: %v\n%s", err, text)
		}
	})
}
