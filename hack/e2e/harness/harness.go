// Package harness is what the end-to-end tiers share: running the
// environment's script (hack/lab.sh for the process lab, hack/cluster.sh for
// the real cluster), the LAN client prober (hack/lab/probe) in the client
// namespace and its JSON lines, ARP/NDP ownership checks, and the watchdog
// that takes an environment down when the test binary dies.
//
// Every command runs in the repository root, and every client (probe, curl,
// ip neigh) runs inside the environment's client namespace through its
// script's `exec client`: never in the root network namespace.
//
// An Env is configured once by TestMain and then only read, so tests may
// share it; a Probe is owned by the test that started it.
package harness

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Env is one environment (a lab or a cluster) and how to reach into it.
type Env struct {
	// Root is the repository root; commands run there.
	Root string
	// Script is the environment's script relative to Root, e.g.
	// "hack/lab.sh"; it must understand `exec client CMD...`.
	Script string
	// Vars are extra environment variables (KEY=VALUE) for every command,
	// e.g. CLUSTER_DIR for hack/cluster.sh.
	Vars []string
	// Probe is the built hack/lab/probe binary.
	Probe string
	// NodeMAC maps node names to the MACs of their LAN interfaces.
	NodeMAC map[string]string
}

// BuildProbe builds hack/lab/probe into dir and records it in e.Probe.
func (e *Env) BuildProbe(dir string) error {
	bin := filepath.Join(dir, "probe")
	if out, err := e.Command("go", "build", "-o", bin, "./hack/lab/probe").CombinedOutput(); err != nil {
		return fmt.Errorf("building the probe: %w\n%s", err, out)
	}
	e.Probe = bin
	return nil
}

// NodeOf returns the node whose MAC is mac, or "" when none is.
func (e *Env) NodeOf(mac string) string {
	for n, m := range e.NodeMAC {
		if m == mac {
			return n
		}
	}
	return ""
}

// Command returns a command that runs in the repository root with the
// environment's variables.
func (e *Env) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = e.Root
	if len(e.Vars) > 0 {
		cmd.Env = append(os.Environ(), e.Vars...)
	}
	return cmd
}

// Try runs a command and returns its stdout; a failure's error carries
// stdout and stderr. env adds variables to this command only.
func (e *Env) Try(stdin string, env []string, name string, args ...string) (string, error) {
	cmd := e.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if env != nil {
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, env...)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s%s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// Run is Try that fails the test on error.
func (e *Env) Run(t testing.TB, stdin string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := e.Try(stdin, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// TryScript runs the environment's script with args.
func (e *Env) TryScript(args ...string) (string, error) {
	return e.Try("", nil, "bash", append([]string{e.Script}, args...)...)
}

// InClient runs a command in the client namespace.
func (e *Env) InClient(args ...string) (string, error) {
	return e.TryScript(append([]string{"exec", "client"}, args...)...)
}

// ---- ARP / NDP ----

// ARPRound is one line of `probe arp`.
type ARPRound struct {
	Round int              `json:"round"`
	T     float64          `json:"t_ms"`
	Unix  float64          `json:"unix_ms"`
	MACs  []string         `json:"macs"`
	Lat   map[string]int64 `json:"lat_us"`
	Grat  []string         `json:"grat"`
	Sum   bool             `json:"summary"`
}

// At is when the round's question was sent.
func (r ARPRound) At() time.Time { return time.UnixMicro(int64(r.Unix * 1000)) }

// Seen lists the MACs heard in the round in the order that tells who
// held the address when: the replies first, all of them to one question
// sent before anything else in the round was heard, prev (the MAC last
// seen before the round) first among them, then the others by reply time;
// then the announcements. Two nodes answering one question is a handover
// under way, not a move back, unless an announcement by the other was
// heard in an earlier round: then prev is the other, and the old owner's
// reply comes after it.
func (r ARPRound) Seen(prev string) []string {
	replies := slices.Clone(r.MACs)
	slices.SortStableFunc(replies, func(a, b string) int {
		switch {
		case a == prev:
			return -1
		case b == prev:
			return 1
		}
		return cmp.Compare(r.Lat[a], r.Lat[b])
	})
	return append(replies, r.Grat...)
}

// ARPOnce asks once for ip from the client and returns the MACs that answered.
func (e *Env) ARPOnce(t testing.TB, ip string) ARPRound {
	t.Helper()
	out, err := e.InClient(e.Probe, "arp", "--ip", ip, "--wait", "200ms")
	if err != nil {
		t.Fatalf("probe arp %s: %v", ip, err)
	}
	var r ARPRound
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		t.Fatalf("probe arp output %q: %v", out, err)
	}
	return r
}

// Owner waits (up to wait) until exactly one MAC answers for ip and returns
// its node. Two MACs answering at any time fails the test.
func (e *Env) Owner(t testing.TB, ip string, wait time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		r := e.ARPOnce(t, ip)
		switch len(r.MACs) {
		case 1:
			n := e.NodeOf(r.MACs[0])
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

// OwnerIs waits until ip is answered by want (exactly one MAC).
func (e *Env) OwnerIs(t testing.TB, ip, want string, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var last ARPRound
	for time.Now().Before(deadline) {
		last = e.ARPOnce(t, ip)
		if len(last.MACs) > 1 {
			t.Fatalf("%d MACs answer for %s at once: %v (split brain)", len(last.MACs), ip, last.MACs)
		}
		if len(last.MACs) == 1 && last.MACs[0] == e.NodeMAC[want] {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s is not answered by %s (%s) after %v; last answer: %v", ip, want, e.NodeMAC[want], wait, last.MACs)
}

// NeighMAC returns the client's neighbour-cache entry for ip.
func (e *Env) NeighMAC(t testing.TB, ip string) string {
	t.Helper()
	out, err := e.InClient("ip", "neigh", "show", ip)
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

// ---- HTTP ----

// URL is the /health URL of ip:port.
func URL(ip string, port int) string {
	if strings.Contains(ip, ":") {
		ip = "[" + ip + "]"
	}
	return fmt.Sprintf("http://%s:%d/health", ip, port)
}

// Curl GETs u from the client (fresh connection) and returns the body.
func (e *Env) Curl(t testing.TB, u string) string {
	t.Helper()
	out, err := e.InClient("curl", "-sg", "--max-time", "2", u)
	if err != nil {
		t.Fatalf("curl %s from the client: %v", u, err)
	}
	return strings.TrimSpace(out)
}

// CurlUntil retries curl until it returns want.
func (e *Env) CurlUntil(t testing.TB, u, want string, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var got string
	for time.Now().Before(deadline) {
		out, err := e.InClient("curl", "-sg", "--max-time", "1", u)
		got = strings.TrimSpace(out)
		if err == nil && got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("curl %s: got %q, want %q (waited %v)", u, got, want, wait)
}

// HTTPResult is one line of `probe http`.
type HTTPResult struct {
	T    float64 `json:"t_ms"`
	Unix float64 `json:"unix_ms"`
	OK   bool    `json:"ok"`
	Node string  `json:"node"`
	Lat  float64 `json:"lat_ms"`
	Err  string  `json:"err"`
}

// Start is when the request started.
func (r HTTPResult) Start() time.Time { return time.UnixMicro(int64(r.Unix * 1000)) }

// End is when the request completed or failed.
func (r HTTPResult) End() time.Time {
	return r.Start().Add(time.Duration(r.Lat * float64(time.Millisecond)))
}

// Failures counts the failed requests and returns the first and last.
func Failures(rs []HTTPResult) (n int, first, last HTTPResult) {
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

// ---- background probes ----

// Probe is a `probe` running in the client namespace until stopped. Its
// output lines are collected as they come; Stop may be called any number of
// times, from any goroutine.
type Probe struct {
	cmd   *exec.Cmd
	stop  string
	done  chan struct{}
	mu    sync.Mutex
	lines [][]byte
	err   bytes.Buffer // written by the command, read once done
}

// StartProbe starts `probe ARGS... --until-file F` in the client namespace;
// it is stopped when the test ends.
func (e *Env) StartProbe(t testing.TB, args ...string) *Probe {
	t.Helper()
	return e.StartProbeIn(t, "client", args...)
}

// StartProbeIn is StartProbe in another of the environment's namespaces
// (a role its script's `exec` knows, e.g. "cp" or a node).
func (e *Env) StartProbeIn(t testing.TB, role string, args ...string) *Probe {
	t.Helper()
	p := &Probe{stop: filepath.Join(t.TempDir(), "stop"), done: make(chan struct{})}
	full := append([]string{e.Script, "exec", role, e.Probe}, args...)
	full = append(full, "--until-file", p.stop)
	p.cmd = e.Command("bash", full...)
	p.cmd.Stderr = &syncWriter{mu: &p.mu, w: &p.err}
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

type syncWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// Stop ends the probe and waits for it.
func (p *Probe) Stop() {
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

// Stderr is what the probe wrote to stderr so far.
func (p *Probe) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err.String()
}

// Lines returns the output lines so far.
func (p *Probe) Lines() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.lines...)
}

// Results returns the requests of a `probe http` so far, in start order.
func (p *Probe) Results(t testing.TB) []HTTPResult {
	t.Helper()
	var out []HTTPResult
	for _, l := range p.Lines() {
		var r HTTPResult
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("probe http line %q: %v", l, err)
		}
		out = append(out, r)
	}
	SortBy(out, func(r HTTPResult) float64 { return r.T })
	return out
}

// Rounds returns the rounds of a `probe arp --watch` so far (no summary).
func (p *Probe) Rounds(t testing.TB) []ARPRound {
	t.Helper()
	var out []ARPRound
	for _, l := range p.Lines() {
		var r ARPRound
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("probe arp line %q: %v", l, err)
		}
		if !r.Sum {
			out = append(out, r)
		}
	}
	return out
}

// WaitOK waits until a request started at or after since succeeds from a
// node other than not (any node when not is empty), and returns it.
func (p *Probe) WaitOK(t testing.TB, since time.Time, not string, wait time.Duration) HTTPResult {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		for _, r := range p.Results(t) {
			if r.OK && !r.Start().Before(since) && r.Node != not {
				return r
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no successful request from a node other than %q within %v after %s; probe stderr: %s", not, wait, since.Format("15:04:05.000"), p.Stderr())
	return HTTPResult{}
}

// SortBy sorts s by key, stably (insertion sort: the probes' lines are
// nearly in order already).
func SortBy[T any](s []T, key func(T) float64) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && key(s[j]) < key(s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// MsSince is b - a in milliseconds.
func MsSince(a time.Time, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }

// ---- teardown ----

// StartWatchdog starts a process outside this one's process group that runs
// `bash SCRIPT down` (with the Env's variables) once this process is gone,
// if statePath still records suffix, that is, if the environment is still
// the one this run brought up. It covers deaths no defer sees (a -timeout
// panic, SIGKILL).
func (e *Env) StartWatchdog(statePath, suffix string) error {
	script := `while kill -0 "$1" 2>/dev/null; do sleep 1; done
grep -qx "suffix=$2" "$3" 2>/dev/null && exec bash "$4" down`
	cmd := e.Command("bash", "-c", script, "watchdog", strconv.Itoa(os.Getpid()), suffix, statePath, e.Script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}

// StateValue returns KEY's value from a KEY=VALUE state file, or "".
func StateValue(statePath, key string) string {
	b, err := os.ReadFile(statePath)
	if err != nil {
		return ""
	}
	var v string
	for _, l := range strings.Split(string(b), "\n") {
		if s, ok := strings.CutPrefix(l, key+"="); ok {
			v = s
		}
	}
	return v
}
