package kubeclient

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type step struct {
	err error
}

// script answers RoundTrip with its steps in order, then 200s.
type script struct {
	steps []step
	calls []string
}

func (s *script) RoundTrip(req *http.Request) (*http.Response, error) {
	s.calls = append(s.calls, req.Method)
	if len(s.steps) > 0 {
		st := s.steps[0]
		s.steps = s.steps[1:]
		if st.err != nil {
			return nil, st.err
		}
	}
	return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader("ok")), Request: req}, nil
}

func dialErr(errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
}

func TestWaiterRetriesOnlyUnconnectedReads(t *testing.T) {
	refused := dialErr(syscall.ECONNREFUSED)
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	for _, tc := range []struct {
		name      string
		method    string
		steps     []step
		wantCalls int
		wantErr   error
	}{
		{"get after two refusals", http.MethodGet, []step{{refused}, {refused}}, 3, nil},
		{"get after unreachable", http.MethodGet, []step{{dialErr(syscall.EHOSTUNREACH)}, {dialErr(syscall.ENETUNREACH)}}, 3, nil},
		{"dial timeout", http.MethodGet, []step{{&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}}}, 2, nil},
		{"reset after connecting is not retried", http.MethodGet, []step{{reset}}, 1, reset},
		{"post is never retried", http.MethodPost, []step{{refused}}, 1, refused},
		{"patch is never retried", http.MethodPatch, []step{{refused}}, 1, refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &script{steps: tc.steps}
			var slept []time.Duration
			w := &waiter{next: s, sleep: func(_ context.Context, d time.Duration) bool {
				slept = append(slept, d)
				return true
			}}
			req, _ := http.NewRequest(tc.method, "https://198.51.100.5:6443/api/v1/services", nil)
			resp, err := w.RoundTrip(req)
			if len(s.calls) != tc.wantCalls {
				t.Errorf("%d round trips, want %d", len(s.calls), tc.wantCalls)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("RoundTrip = %v, %v; want 200", resp, err)
			}
			if len(slept) != tc.wantCalls-1 {
				t.Errorf("slept %d times, want %d", len(slept), tc.wantCalls-1)
			}
			for i, d := range slept {
				if d < MinRetryDelay/2 || d > 3*MaxRetryDelay/2 {
					t.Errorf("retry %d waited %v, outside [%v, %v]", i, d, MinRetryDelay/2, 3*MaxRetryDelay/2)
				}
			}
		})
	}
}

func TestWaiterDelaysGrowToTheCap(t *testing.T) {
	steps := make([]step, 12)
	for i := range steps {
		steps[i] = step{dialErr(syscall.ECONNREFUSED)}
	}
	var slept []time.Duration
	w := &waiter{next: &script{steps: steps}, sleep: func(_ context.Context, d time.Duration) bool {
		slept = append(slept, d)
		return true
	}}
	req, _ := http.NewRequest(http.MethodGet, "https://198.51.100.5:6443/api", nil)
	if _, err := w.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	if len(slept) != 12 {
		t.Fatalf("slept %d times, want 12", len(slept))
	}
	if slept[0] > 3*MinRetryDelay/2 {
		t.Errorf("first retry after %v, want at most %v", slept[0], 3*MinRetryDelay/2)
	}
	for _, d := range slept[6:] {
		if d < MaxRetryDelay/2 || d > 3*MaxRetryDelay/2 {
			t.Errorf("late retry after %v, want within ±50%% of %v", d, MaxRetryDelay)
		}
	}
}

func TestWaiterGivesUpWhenTheRequestEnds(t *testing.T) {
	refused := dialErr(syscall.ECONNREFUSED)
	s := &script{steps: []step{{refused}, {refused}, {refused}}}
	w := &waiter{next: s, sleep: func(ctx context.Context, _ time.Duration) bool { return ctx.Err() == nil }}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://198.51.100.5:6443/api", nil)
	if _, err := w.RoundTrip(req); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err = %v, want the connection error", err)
	}
	if len(s.calls) != 1 {
		t.Errorf("%d round trips after the context ended, want 1", len(s.calls))
	}
}

func TestConfigWrapsTheTransport(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://198.51.100.5:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	cfg, err := Config(kc, "ironlb-test")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UserAgent != "ironlb-test" || cfg.WrapTransport == nil {
		t.Fatalf("config: user agent %q, wrapped %v", cfg.UserAgent, cfg.WrapTransport != nil)
	}
	if _, ok := cfg.WrapTransport(&script{}).(*waiter); !ok {
		t.Fatal("the transport wrapper does not wait for the API server")
	}
	if _, err := Config(filepath.Join(dir, "missing"), "x"); err == nil {
		t.Fatal("a missing kubeconfig loads")
	}
}

func writeKubeconfig(t *testing.T, path, server string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(path, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+server+`"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
}

// Config finds the server as kubectl does: --kubeconfig, then $KUBECONFIG,
// then ~/.kube/config, then the in-cluster service account.
func TestConfigLoadingRules(t *testing.T) {
	dir := t.TempDir()
	flagKC, envKC, homeKC := filepath.Join(dir, "flag"), filepath.Join(dir, "env"), filepath.Join(dir, "home", ".kube", "config")
	writeKubeconfig(t, flagKC, "https://198.51.100.1:6443")
	writeKubeconfig(t, envKC, "https://198.51.100.2:6443")
	writeKubeconfig(t, homeKC, "https://198.51.100.3:6443")
	// Not in a pod, whatever runs the test.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	for _, tc := range []struct {
		name, flag, env, home, want string
	}{
		{"the flag wins over $KUBECONFIG", flagKC, envKC, filepath.Join(dir, "home"), "https://198.51.100.1:6443"},
		{"$KUBECONFIG", "", envKC, filepath.Join(dir, "home"), "https://198.51.100.2:6443"},
		{"$KUBECONFIG is a path list", "", filepath.Join(dir, "missing") + string(os.PathListSeparator) + envKC, filepath.Join(dir, "home"), "https://198.51.100.2:6443"},
		{"~/.kube/config", "", "", filepath.Join(dir, "home"), "https://198.51.100.3:6443"},
		{"nothing at all", "", "", filepath.Join(dir, "nobody"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tc.env)
			t.Setenv("HOME", tc.home)
			cfg, err := Config(tc.flag, "ironlb-test")
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
					t.Fatalf("got %v, %v; want an error that says how to configure the client", cfg, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != tc.want || cfg.UserAgent != "ironlb-test" {
				t.Errorf("host %q user agent %q, want %q", cfg.Host, cfg.UserAgent, tc.want)
			}
		})
	}
}
