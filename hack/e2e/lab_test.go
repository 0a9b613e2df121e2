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
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	root       string // repository root
	probeBin   string // hack/lab/probe, built by TestMain
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
	probeBin = filepath.Join(tmp, "probe")
	if out, err := command("go", "build", "-o", probeBin, "./hack/lab/probe").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: building the probe: %v\n%s", err, out)
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
	if b, err := os.ReadFile(state); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if s, ok := strings.CutPrefix(l, "suffix="); ok {
				suffix = s
			}
		}
	}
	if suffix != "" {
		startWatchdog(state)
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

// startWatchdog starts a process outside this one's process group that takes
// the lab down once this process is gone, if the lab is still the one this
// run brought up. It covers deaths no defer sees (a -timeout panic, SIGKILL).
func startWatchdog(state string) {
	script := `while kill -0 "$1" 2>/dev/null; do sleep 1; done
grep -qx "suffix=$2" "$3" 2>/dev/null && exec bash hack/lab.sh down`
	cmd := exec.Command("bash", "-c", script, "watchdog", strconv.Itoa(os.Getpid()), suffix, state)
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot start the watchdog:", err)
		return
	}
	go cmd.Wait()
}

func command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	return cmd
}

// ---- helpers: lab, kubectl, probes ----

// run runs a command in the repository root and returns its stdout; on
// failure it fails the test with stderr.
func runCmd(t testing.TB, stdin string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := tryCmd(stdin, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func tryCmd(stdin string, env []string, name string, args ...string) (string, error) {
	cmd := command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s%s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
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
func inClient(args ...string) (string, error) {
	return tryCmd("", nil, "bash", append([]string{"hack/lab.sh", "exec", "client"}, args...)...)
}

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
		if _, err := tryCmd("", nil, "bash", "hack/kubectl", "--request-timeout=20s", "-n", ns, "delete", "service", name, "--wait=false"); err != nil {
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
type arpRound struct {
	Round int              `json:"round"`
	T     float64          `json:"t_ms"`
	Unix  float64          `json:"unix_ms"`
	MACs  []string         `json:"macs"`
	Lat   map[string]int64 `json:"lat_us"`
	Grat  []string         `json:"grat"`
	Sum   bool             `json:"summary"`
}

func (r arpRound) at() time.Time { return time.UnixMicro(int64(r.Unix * 1000)) }

// arpOnce asks once for ip from the client and returns the MACs that answered.
func arpOnce(t *testing.T, ip string) arpRound {
	t.Helper()
	out, err := inClient(probeBin, "arp", "--ip", ip, "--wait", "200ms")
	if err != nil {
		t.Fatalf("probe arp %s: %v", ip, err)
	}
	var r arpRound
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		t.Fatalf("probe arp output %q: %v", out, err)
	}
	return r
}

// owner waits (up to wait) until exactly one MAC answers for ip and returns
// its node. Two MACs answering at any time fails the test.
func owner(t *testing.T, ip string, wait time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		r := arpOnce(t, ip)
		switch len(r.MACs) {
		case 1:
			n := macNode[r.MACs[0]]
			if n == "" {
				t.Fatalf("%s answered by unknown MAC %s", ip, r.MACs[0])
			}
			t.Logf("%s is answered by %s (%s) in %d µs", ip, n, r.MACs[0], r.Lat[r.MACs[0]])
			return n
		case 0:
			if time.Now().After(deadline) {
				t.Fatalf("nobody answers ARP/NDP for %s after %v", ip, wait)
			}
			time.Sleep(100 * time.Millisecond)
		default:
			t.Fatalf("%d MACs answer for %s at once: %v (split brain)", len(r.MACs), ip, r.MACs)
		}
	}
}

// ownerIs waits until ip is answered by want (exactly one MAC).
func ownerIs(t *testing.T, ip, want string, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var last arpRound
	for time.Now().Before(deadline) {
		last = arpOnce(t, ip)
		if len(last.MACs) > 1 {
			t.Fatalf("%d MACs answer for %s at once: %v (split brain)", len(last.MACs), ip, last.MACs)
		}
		if len(last.MACs) == 1 && last.MACs[0] == nodeMAC[want] {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s is not answered by %s (%s) after %v; last answer: %v", ip, want, nodeMAC[want], wait, last.MACs)
}

func url(ip string, port int) string {
	if strings.Contains(ip, ":") {
		ip = "[" + ip + "]"
	}
	return fmt.Sprintf("http://%s:%d/health", ip, port)
}

// curl GETs url from the client (fresh connection) and returns the body.
func curl(t *testing.T, u string) string {
	t.Helper()
	out, err := inClient("curl", "-sg", "--max-time", "2", u)
	if err != nil {
		t.Fatalf("curl %s from the client: %v", u, err)
	}
	return strings.TrimSpace(out)
}

// curlUntil retries curl until it returns want.
func curlUntil(t *testing.T, u, want string, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var got string
	for time.Now().Before(deadline) {
		out, err := inClient("curl", "-sg", "--max-time", "1", u)
		got = strings.TrimSpace(out)
		if err == nil && got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("curl %s: got %q, want %q (waited %v)", u, got, want, wait)
}

// bgProbe is a probe running in the client namespace until stopped.
type bgProbe struct {
	cmd   *exec.Cmd
	stop  string
	done  chan struct{}
	mu    sync.Mutex
	lines [][]byte
	err   bytes.Buffer
}

func startProbe(t *testing.T, args ...string) *bgProbe {
	t.Helper()
	p := &bgProbe{stop: filepath.Join(t.TempDir(), "stop"), done: make(chan struct{})}
	full := append([]string{"hack/lab.sh", "exec", "client", probeBin}, args...)
	full = append(full, "--until-file", p.stop)
	p.cmd = command("bash", full...)
	p.cmd.Stderr = &p.err
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, bytes.Clone(sc.Bytes()))
			p.mu.Unlock()
		}
		p.cmd.Wait()
	}()
	t.Cleanup(func() { p.Stop() })
	return p
}

// Stop ends the probe and waits for it.
func (p *bgProbe) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	os.WriteFile(p.stop, nil, 0o644)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *bgProbe) snapshot() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.lines...)
}

// httpResult is one line of `probe http`.
type httpResult struct {
	T    float64 `json:"t_ms"`
	Unix float64 `json:"unix_ms"`
	OK   bool    `json:"ok"`
	Node string  `json:"node"`
	Lat  float64 `json:"lat_ms"`
	Err  string  `json:"err"`
}

func (r httpResult) start() time.Time { return time.UnixMicro(int64(r.Unix * 1000)) }
func (r httpResult) end() time.Time {
	return r.start().Add(time.Duration(r.Lat * float64(time.Millisecond)))
}

// results returns the requests so far, in start order.
func (p *bgProbe) results(t *testing.T) []httpResult {
	var out []httpResult
	for _, l := range p.snapshot() {
		var r httpResult
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("probe http line %q: %v", l, err)
		}
		out = append(out, r)
	}
	sortBy(out, func(r httpResult) float64 { return r.T })
	return out
}

// rounds returns the ARP watch rounds so far (no summary).
func (p *bgProbe) rounds(t *testing.T) []arpRound {
	var out []arpRound
	for _, l := range p.snapshot() {
		var r arpRound
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("probe arp line %q: %v", l, err)
		}
		if !r.Sum {
			out = append(out, r)
		}
	}
	return out
}

func sortBy[T any](s []T, key func(T) float64) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && key(s[j]) < key(s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// waitOK waits until a request started at or after since succeeds from a
// node other than not (any node when not is empty), and returns it.
func (p *bgProbe) waitOK(t *testing.T, since time.Time, not string, wait time.Duration) httpResult {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		for _, r := range p.results(t) {
			if r.OK && !r.start().Before(since) && r.Node != not {
				return r
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no successful request from a node other than %q within %v after %s; probe stderr: %s", not, wait, since.Format("15:04:05.000"), p.err.String())
	return httpResult{}
}

func failures(rs []httpResult) (n int, first, last httpResult) {
	for _, r := range rs {
		if !r.OK {
			if n == 0 {
				first = r
			}
			last = r
			n++
		}
	}
	return
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
	out, err := inClient("ip", "neigh", "show", ip)
	if err != nil {
		t.Fatalf("ip neigh: %v", err)
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return strings.TrimSpace(out)
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

func msSince(a time.Time, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }
