package config

import (
	"fmt"
	"io"
	"os"

	"github.com/ironlb/ironlb/api"
)

// Check validates a config file the way the controller would load it, for
// `controller --check-config` and `kubectl ironlb check-config`, so both
// apply the same rules and say the same things. path is a ConfigMap
// manifest or bare config text, or "-" for stdin. It prints one line per
// pool on stdout and returns 0, or prints every problem on stderr and
// returns 1.
func Check(path string, stdin io.Reader, stdout, stderr io.Writer) int {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		fmt.Fprintf(stderr, "cannot read config: %v\n", err)
		return 1
	}
	src, err := FromFile(b)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	cfg, err := Parse(src.Text)
	if err != nil {
		fmt.Fprintf(stderr, "%s: the config is invalid and would be rejected whole:\n%v\n", path, err)
		return 1
	}
	if src.Name != "" && (src.Namespace != api.DefaultNamespace || src.Name != api.DefaultConfigName) {
		// Valid, but not where the controller looks by default: the usual
		// slip when migrating from MetalLB is keeping metallb-system.
		fmt.Fprintf(stderr, "note: this is ConfigMap %s/%s; by default ironlb reads %s/%s\n", src.Namespace, src.Name, api.DefaultNamespace, api.DefaultConfigName)
	}
	lines := cfg.Summary()
	if len(lines) == 0 {
		fmt.Fprintln(stdout, "no address pools: Services will wait for an address")
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	return 0
}
