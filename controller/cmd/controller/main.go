// Command controller assigns EXTERNAL-IPs to LoadBalancer Services from
// the pools of the ironlb ConfigMap.
//
// With --check-config FILE it only validates a config file and exits, so a
// user can check a ConfigMap before applying it.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ironlb/ironlb/api"
	"github.com/ironlb/ironlb/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	checkConfig := fs.String("check-config", "", "validate FILE (a ConfigMap manifest or bare config text, - for stdin), print one line per pool, and exit 0 if valid or 1 with every problem")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *checkConfig != "" {
		return check(*checkConfig, stdout, stderr)
	}
	fmt.Fprintln(stderr, "controller: the allocation loop is not built yet; only --check-config FILE is available")
	return 2
}

// check validates a config file the way the controller would load it.
func check(path string, stdout, stderr io.Writer) int {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		fmt.Fprintf(stderr, "cannot read config: %v\n", err)
		return 1
	}
	src, err := config.FromFile(b)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	cfg, err := config.Parse(src.Text)
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
