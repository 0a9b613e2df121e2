// Package netnstest holds what every network-namespace test needs before
// it creates namespaces.
package netnstest

import (
	"os"
	"os/exec"
	"testing"
)

// Require skips the test where it cannot run; under CI (CI=true) a missing
// privilege or tool is a failure instead, so a tier cannot silently vanish.
// The tests create namespaces, veths and raw sockets, so they need root
// (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN) and iproute2. -short skips
// them.
func Require(t testing.TB) {
	t.Helper()
	miss := t.Skipf
	if os.Getenv("CI") == "true" {
		miss = t.Fatalf
	}
	if os.Geteuid() != 0 {
		miss("network-namespace test needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		miss("network-namespace test needs iproute2: %v", err)
	}
	if testing.Short() {
		t.Skip("network-namespace test skipped in -short mode")
	}
}
