package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name     string
		file     string
		code     int
		stdout   []string
		stderr   []string
		noStdout bool
	}{
		{
			name:   "shipped example manifest",
			file:   filepath.Join("..", "..", "..", "manifests", "example-config.yaml"),
			stdout: []string{`pool "default": 11 addresses, IPv4`},
		},
		{
			name:   "bare dual-stack text",
			file:   write("bare.yaml", "address-pools:\n- name: dual\n  protocol: layer2\n  auto-assign: false\n  addresses: [10.0.0.0/24, 2001:db8::/120]\n  namespaces: [web]\n"),
			stdout: []string{`pool "dual": 512 addresses, IPv4+IPv6, auto-assign off, namespaces web`},
		},
		{
			name:   "metallb namespace is valid but noted",
			file:   write("metallb.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: metallb-system, name: config}\ndata:\n  config: |\n    address-pools:\n    - {name: a, protocol: layer2, addresses: [10.0.0.0/30]}\n"),
			stdout: []string{`pool "a": 4 addresses, IPv4`},
			stderr: []string{"metallb-system/config", "ironlb-system/config"},
		},
		{
			name:     "every error, exit 1",
			file:     write("bad.yaml", "address-pools:\n- name: a\n  protocol: bgp\n  adresses: [10.0.0.0/24]\n- name: b\n  protocol: layer2\n  addresses: [10.0.0.300/24]\n"),
			code:     1,
			noStdout: true,
			stderr:   []string{"rejected whole", `pool "a"): protocol: "bgp"`, `did you mean "addresses"`, `pool "b"): addresses[0]: invalid CIDR "10.0.0.300/24"`},
		},
		{
			name:     "missing file",
			file:     filepath.Join(dir, "nope.yaml"),
			code:     1,
			noStdout: true,
			stderr:   []string{"nope.yaml"},
		},
		{
			name:   "empty config",
			file:   write("empty.yaml", ""),
			stdout: []string{"no address pools"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run([]string{"--check-config", tt.file}, &out, &errOut)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, &out, &errOut)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout %q lacks %q", &out, w)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr %q lacks %q", &errOut, w)
				}
			}
			if tt.noStdout && out.Len() > 0 {
				t.Errorf("stdout %q, want nothing", &out)
			}
			if len(tt.stderr) == 0 && errOut.Len() > 0 {
				t.Errorf("stderr %q, want nothing", &errOut)
			}
		})
	}
}
