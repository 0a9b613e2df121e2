//go:build e2e

// Package e2e runs end-to-end tests against the network lab (hack/lab.sh):
// real speakers in network namespaces, a client that ARPs and curls, and
// failures made by cutting links and signalling processes.
//
//	go test -tags e2e ./hack/e2e/ -v -count=1 -timeout 30m
//
// Needs root. Without root the tests are skipped, unless CI=true, where that
// is a failure. TestMain brings a fresh lab up and always takes it down: on
// return, on SIGINT/SIGTERM, and, through a watchdog process, even when the
// test binary dies (a -timeout panic, SIGKILL).
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ironlb/ironlb/hack/e2e/harness"
)

var (
	root       string // repository root
	speakerBin string // a copy of the lab's speaker, so restarts never rebuild
	suffix     string // the lab's namespace suffix
)

// Nodes and their fixed MACs (hack/lab.sh: 02:00:c6:33:64:XX, XX the last
// IPv4 octet in hex).
var (
	nodes   = []string{"n1", "n2", "n3"}
	nodeMAC = map[string]string{"n1": "02:00:c6:33:64:0b", "n2": "02:00:c6:33:64:0c", "n3": "02:00:c6:33:64:0d"}
	macNode = map[string]string{"02:00:c6:33:64:0b": "n1", "02:00:c6:33:64:0c": "n2", "02:00:c6:33:64:0d": "n3"}
	nodeIP  = map[string]string{"n1": "198.51.100.11", "n2": "198.51.100.12", "n3": "198.51.100.13"}
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "FAIL: the e2e tests need root (network namespaces) and CI=true: refusing to skip")
			return 1
		}
		fmt.Fprintln(os.Stderr, "SKIP: the e2e tests need root (network namespaces); run them as root")
		return 0
	}
	var err error
	if root, err = filepath.Abs("../.."); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	state := filepath.Join(root, ".cache/lab/state")
	if _, err := os.Stat(state); err == nil {
		fmt.Fprintln(os.Stderr, "FAIL: a lab is already up (.cache/lab/state exists); someone else may be using it. Take it down with hack/lab.sh down first.")
		return 1
	}
	tmp, err := os.MkdirTemp("", "ironlb-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	h.Root = root
	if err := h.BuildProbe(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}

	// Whatever happens from here on, the lab goes down.
	down := sync.OnceFunc(func() {
		cmd := command("bash", "hack/lab.sh", "down")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "hack/lab.sh down:", err)
		}
	})
	defer down()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %v: taking the lab down\n", s)
		down()
		os.Exit(1)
	}()

	up := command("bash", "hack/lab.sh", "up")
	up.Stdout, up.Stderr = os.Stderr, os.Stderr
	upErr := up.Run()
	suffix = harness.StateValue(state, "suffix")
	if suffix != "" {
		// The watchdog takes the lab down even when this process dies
		// where no defer runs (a -timeout panic, SIGKILL).
		if err := h.StartWatchdog(state, suffix); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: cannot start the watchdog:", err)
		}
	}
	if upErr != nil {
		fmt.Fprintln(os.Stderr, "FAIL: hack/lab.sh up:", upErr)
		return 1
	}
	// Speaker restarts use this copy: other people edit speaker/ while the
	// tests run, and a rebuild would test their half-done tree.
	speakerBin = filepath.Join(tmp, "speaker")
	if out, err := exec.Command("cp", filepath.Join(root, ".cache/lab/bin/speaker"), speakerBin).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: copying the speaker binary: %v %s\n", err, out)
		return 1
	}
	return m.Run()
}

func command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	return cmd
}

// ---- helpers: lab, kubectl, probes ----
//
// The generic ones live in hack/e2e/harness, shared with the real-cluster
// tier; these bind them to the lab.

// h is the lab as the harness sees it; TestMain fills it in.
var h = &harness.Env{Script: "hack/lab.sh", NodeMAC: nodeMAC}

// runCmd runs a command in the repository root and returns its stdout; on
// failure it fails the test with stderr.
func runCmd(t testing.TB, stdin string, env []string, name string, args ...string) string {
	t.Helper()
	return h.Run(t, stdin, env, name, args...)
}

func tryCmd(stdin string, env []string, name string, args ...string) (string, error) {
	return h.Try(stdin, env, name, args...)
}

func lab(t testing.TB, args ...string) string {
	t.Helper()
	return runCmd(t, "", []string{"LAB_SPEAKER_BIN=" + speakerBin}, "bash", append([]string{"hack/lab.sh"}, args...)...)
}

func kubectl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	return runCmd(t, stdin, nil, "bash", append([]string{"hack/kubectl", "--request-timeout=20s"}, args...)...)
}

// inClient runs a command in the client namespace.
func inClient(args ...string) (string, error) { return h.InClient(args...) }

// namespace creates a fresh Kubernetes namespace (deleting one hangs in the
// lab: no namespace controller), so each test's objects stay apart.
func namespace(t *testing.T, name string) string {
	t.Helper()
	name = fmt.Sprintf("%s-%d", name, nsCount.Add(1))
	kubectl(t, "", "create", "namespace", name)
	return name
}

// nsCount keeps namespace names fresh under -count=N.
var nsCount atomic.Int64

// service applies a Service manifest and deletes it when the test ends, so
// its addresses go back to the small pool.
func service(t *testing.T, ns, name, spec string) {
	t.Helper()
	manifest := fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\n%s", name, ns, spec)
	kubectl(t, manifest, "apply", "-f", "-")
	t.Cleanup(func() {
		if _, err := tryCmd("", nil, "bash", "hack/kubectl", "--request-timeout=20s", "-n", ns, "delete", "service", name, "--wait=false", "--ignore-not-found"); err != nil {
			t.Logf("deleting Service %s/%s: %v", ns, name, err)
		}
	})
}

// ingress waits for a Service to have n ingress IPs.
func ingress(t *testing.T, ns, name string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := tryCmd("", nil, "bash", "hack/kubectl", "-n", ns, "get", "service", name,
			"-o", "jsonpath={.status.loadBalancer.ingress[*].ip}")
		ips := strings.Fields(out)
		if len(ips) >= n {
			return ips
		}
		if time.Now().After(deadline) {
			ev, _ := tryCmd("", nil, "bash", "hack/kubectl", "-n", ns, "get", "events")
			t.Fatalf("Service %s/%s has ingress %q after 30 s, want %d addresses; events:\n%s", ns, name, ips, n, ev)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// arpRound is one line of `probe arp`.
type arpRound struct{ harness.ARPRound }

func (r arpRound) at() time.Time { return r.At() }

// arpOnce asks once for ip from the client and returns the MACs that answered.
func arpOnce(t *testing.T, ip string) arpRound {
	t.Helper()
	return arpRound{h.ARPOnce(t, ip)}
}

// owner waits (up to wait) until exactly one MAC answers for ip and returns
// its node. Two MACs answering at any time fails the test.
func owner(t *testing.T, ip string, wait time.Duration) string {
	t.Helper()
	return h.Owner(t, ip, wait)
}

// ownerIs waits until ip is answered by want (exactly one MAC).
func ownerIs(t *testing.T, ip, want string, wait time.Duration) {
	t.Helper()
	h.OwnerIs(t, ip, want, wait)
}

func url(ip string, port int) string { return harness.URL(ip, port) }

// curl GETs url from the client (fresh connection) and returns the body.
func curl(t *testing.T, u string) string {
	t.Helper()
	return h.Curl(t, u)
}

// curlUntil retries curl until it returns want.
func curlUntil(t *testing.T, u, want string, wait time.Duration) {
	t.Helper()
	h.CurlUntil(t, u, want, wait)
}

// bgProbe is a probe running in the client namespace until stopped.
type bgProbe struct{ *harness.Probe }

func startProbe(t *testing.T, args ...string) *bgProbe {
	t.Helper()
	return &bgProbe{h.StartProbe(t, args...)}
}

// httpResult is one line of `probe http`.
type httpResult struct{ harness.HTTPResult }

func (r httpResult) start() time.Time { return r.Start() }
func (r httpResult) end() time.Time   { return r.End() }

// results returns the requests so far, in start order.
func (p *bgProbe) results(t *testing.T) []httpResult {
	t.Helper()
	var out []httpResult
	for _, r := range p.Results(t) {
		out = append(out, httpResult{r})
	}
	return out
}

// rounds returns the ARP watch rounds so far (no summary).
func (p *bgProbe) rounds(t *testing.T) []arpRound {
	t.Helper()
	var out []arpRound
	for _, r := range p.Rounds(t) {
		out = append(out, arpRound{r})
	}
	return out
}

// waitOK waits until a request started at or after since succeeds from a
// node other than not (any node when not is empty), and returns it.
func (p *bgProbe) waitOK(t *testing.T, since time.Time, not string, wait time.Duration) httpResult {
	t.Helper()
	return httpResult{p.WaitOK(t, since, not, wait)}
}

// failures is harness.Failures on this package's wrapper type.
func failures(rs []httpResult) (n int, first, last httpResult) {
	plain := make([]harness.HTTPResult, len(rs))
	for i, r := range rs {
		plain[i] = r.HTTPResult
	}
	n, f, l := harness.Failures(plain)
	return n, httpResult{f}, httpResult{l}
}

// cut takes node off the LAN and puts it back when the test ends.
func cut(t *testing.T, node string) {
	t.Helper()
	lab(t, "cut", node)
	t.Cleanup(func() { tryCmd("", nil, "bash", "hack/lab.sh", "uncut", node) })
}

// neighMAC returns the client's neighbour-cache entry for ip.
func neighMAC(t *testing.T, ip string) string {
	t.Helper()
	return h.NeighMAC(t, ip)
}

func speakerLog(t *testing.T, node string) string {
	b, err := os.ReadFile(filepath.Join(root, ".cache/lab/logs/speaker-"+node+".log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// logLines returns the lines of node's speaker log after offset that
// contain any of the words.
func logLines(t *testing.T, node string, offset int, words ...string) []string {
	var out []string
	l := speakerLog(t, node)
	if offset > len(l) {
		offset = 0
	}
	for _, line := range strings.Split(l[offset:], "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

func logOffsets(t *testing.T) map[string]int {
	m := map[string]int{}
	for _, n := range nodes {
		m[n] = len(speakerLog(t, n))
	}
	return m
}

func msSince(a time.Time, b time.Time) float64 { return harness.MsSince(a, b) }

// noDuplicateReports fails t if a speaker logged a duplicate announcer
// since offsets (logOffsets), or ns holds a DuplicateAnnouncer Event: a
// handover between live speakers (a failback, a restarted owner taking its
// addresses back from the node that drains them) is neither.
func noDuplicateReports(t *testing.T, ns string, offsets map[string]int, what string) {
	t.Helper()
	for _, n := range nodes {
		if l := logLines(t, n, offsets[n], "Another MAC announces"); len(l) > 0 {
			t.Errorf("%s: %s reported a duplicate announcer:\n%s", what, n, strings.Join(l, "\n"))
		}
	}
	evs := kubectl(t, "", "-n", ns, "get", "events", "--field-selector", "reason=DuplicateAnnouncer",
		"-o", `jsonpath={range .items[*]}{.reportingInstance}{": "}{.message}{"\n"}{end}`)
	if evs = strings.TrimSpace(evs); evs != "" {
		t.Errorf("%s: DuplicateAnnouncer Events:\n%s", what, evs)
	}
}
