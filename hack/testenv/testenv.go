// Package testenv runs a real control plane (etcd + kube-apiserver, started
// by hack/control-plane.sh) for the integration tests of one test package:
//
//	var env *testenv.Env
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env)) }
//
// Test files that use it carry the build tag integration, so plain
// `go test ./...` stays a fast unit run.
//
// The first start on a machine builds kube-apiserver and kubectl (10-15
// minutes on 2 cores). go test kills a test binary at -timeout plus a minute
// (11 minutes by default), so run `hack/control-plane.sh build` before
// `go test -tags integration`, or raise -timeout.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/hack/repo"
)

// Env is a running control plane.
type Env struct {
	Dir         string
	Kubeconfig  string       // path
	Config      *rest.Config // QPS and Burst raised so tests are not throttled
	Client      kubernetes.Interface
	KubectlPath string // path to the kubectl binary
}

// Main starts one control plane in a temp dir, runs m, stops it and returns
// m's exit code (or 1 if the control plane did not start). The processes are
// stopped on every exit path: normal return, SIGINT/SIGTERM, and, through a
// watchdog that waits for this process to go away, a panic, os.Exit or even
// SIGKILL of the test binary.
func Main(m *testing.M, env **Env) int {
	e, stop, err := start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: control plane did not start: %v\n", err)
		return 1
	}
	defer stop()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "testenv: %v: stopping the control plane\n", s)
		stop()
		os.Exit(1)
	}()

	*env = e
	return m.Run()
}

func start() (_ *Env, _ func(), err error) {
	root, err := repo.Root()
	if err != nil {
		return nil, nil, err
	}
	script := filepath.Join(root, "hack", "control-plane.sh")
	dir, err := os.MkdirTemp("", "ironlb-cp-")
	if err != nil {
		return nil, nil, err
	}
	e := &Env{Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig")}

	// The watchdog runs `down` once its stdin reaches EOF, which happens
	// when we close the pipe or when this process dies in any way. It has
	// its own session so a terminal's Ctrl-C does not kill it first, and
	// no stdout/stderr of ours so it never blocks `go test` reading them.
	r, w, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	watchdog := exec.Command("bash", "-c", `cat >/dev/null; exec bash "$0" down "$1"`, script, dir)
	watchdog.Stdin = r
	watchdog.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := watchdog.Start(); err != nil {
		r.Close()
		w.Close()
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("starting watchdog: %w", err)
	}
	r.Close()

	var once sync.Once
	stop := func() {
		once.Do(func() {
			if out, err := exec.Command("bash", script, "down", dir).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "testenv: %s down %s: %v\n%s", script, dir, err, out)
			}
			w.Close()
			_ = watchdog.Wait()
		})
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			stop()
			panic(p)
		}
	}()

	// up prints the one-time build notice and, on failure, the log tails.
	up := exec.Command("bash", script, "up", dir)
	// Should we die mid-start, up dies too; the watchdog's down waits for
	// up's lock on dir, so nothing it started is left behind.
	up.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	up.Stdout = os.Stderr
	up.Stderr = os.Stderr
	if err := up.Run(); err != nil {
		return nil, nil, fmt.Errorf("%s up %s: %w (logs above)", script, dir, err)
	}

	out, err := exec.Command("bash", script, "kubectl-path").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("%s kubectl-path: %w", script, err)
	}
	e.KubectlPath = strings.TrimSpace(string(out))

	e.Config, err = clientcmd.BuildConfigFromFlags("", e.Kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("loading %s: %w", e.Kubeconfig, err)
	}
	e.Config.QPS = 1000
	e.Config.Burst = 2000
	e.Client, err = kubernetes.NewForConfig(e.Config)
	if err != nil {
		return nil, nil, err
	}
	return e, stop, nil
}

var notDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a fresh namespace named after the test. Nothing deletes
// namespaces here (no namespace controller), so each test gets its own.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	prefix := strings.Trim(notDNS.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(prefix) > 40 {
		prefix = strings.TrimRight(prefix[:40], "-")
	}
	if prefix == "" {
		prefix = "test"
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := e.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

// Kubectl runs kubectl against the control plane and returns its stdout; it
// fails the test with kubectl's stderr if kubectl fails.
func (e *Env) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.KubectlPath, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}
