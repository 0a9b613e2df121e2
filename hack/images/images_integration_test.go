//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/hack/repo"
)

// TestImages builds every image as hack/images.sh does, twice, and checks
// that the two builds are byte-identical, that each archive holds the image
// the manifests and the cluster expect, and that each binary is static and
// runs on its own.
func TestImages(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	first, second := t.TempDir(), t.TempDir()
	built, err := Build(ctx, root, first, Names(), testOpts)
	if err != nil {
		t.Fatal(err)
	}
	// The second build's binaries come from a fresh link, not a copy of
	// the first: the build cache holds packages, not linked commands.
	if _, err := Build(ctx, root, second, Names(), testOpts); err != nil {
		t.Fatal(err)
	}

	for _, b := range built {
		t.Run(b.Name, func(t *testing.T) {
			a, err := os.ReadFile(b.Path)
			if err != nil {
				t.Fatal(err)
			}
			again, err := os.ReadFile(filepath.Join(second, b.Name+".tar"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, again) {
				t.Errorf("two builds of %s differ (%d and %d bytes)", b.Name, len(a), len(again))
			}

			got, files := imageOf(t, b.Path)
			if diff := cmp.Diff(wantImage(b.Name, testOpts), got, ignoreID); diff != "" {
				t.Errorf("image (-want +got):\n%s", diff)
			}
			if got.ID != b.ID {
				t.Errorf("Build returned image ID %s, the archive's config is %s", b.ID, got.ID)
			}

			bin := files[b.Name]
			checkStatic(t, bin)
			if bytes.Contains(bin, []byte(root)) {
				t.Errorf("the binary contains the build directory %s: not built with -trimpath", root)
			}
			exe := filepath.Join(t.TempDir(), b.Name)
			if err := os.WriteFile(exe, bin, 0o755); err != nil {
				t.Fatal(err)
			}
			runs[b.Name](t, ctx, root, exe)
		})
	}
}

// checkStatic fails unless bin is an ELF executable for this architecture
// with no interpreter and no shared libraries, so that it runs in an image
// without libc, and without a symbol table (-ldflags -s).
func checkStatic(t *testing.T, bin []byte) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("not an ELF file: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has a program interpreter: not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Error("the binary has a symbol table: not built with -ldflags -s")
	}
}

// runs starts each extracted binary the way its image would be used.
var runs = map[string]func(t *testing.T, ctx context.Context, root, exe string){
	"controller": func(t *testing.T, ctx context.Context, root, exe string) {
		cmd := exec.CommandContext(ctx, exe, "--check-config", filepath.Join(root, "manifests", "example-config.yaml"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("controller --check-config: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
		}
		if want := `pool "default": 11 addresses, IPv4`; !strings.Contains(stdout.String(), want) {
			t.Errorf("controller --check-config printed %q, want a line %q (stderr %q)", stdout.String(), want, stderr.String())
		}
	},
	"speaker": func(t *testing.T, ctx context.Context, root, exe string) {
		// The speaker needs a cluster; its usage shows that it starts.
		cmd := exec.CommandContext(ctx, exe, "--help")
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil {
			t.Fatalf("speaker --help: %v", err)
		}
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "-node-name") {
			t.Errorf("speaker --help exited %d (%v) with %q, want 2 and the usage", code, err, out)
		}
	},
	"pause": func(t *testing.T, ctx context.Context, root, exe string) {
		cmd := exec.CommandContext(ctx, exe)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Not PID 1 here, so pause warns, once it has set up its signals.
		line, err := bufio.NewReader(stderr).ReadString('\n')
		if !strings.Contains(line, "not PID 1") {
			cmd.Process.Kill()
			t.Fatalf("pause printed %q (%v), want the PID 1 warning", line, err)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			io.Copy(io.Discard, stderr)
			done <- cmd.Wait()
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pause after SIGTERM: %v, want exit 0", err)
			}
		case <-time.After(2 * time.Second):
			cmd.Process.Kill()
			t.Error("pause did not exit within 2s of SIGTERM")
		}
	},
	"backend": func(t *testing.T, ctx context.Context, root, exe string) {
		addr := freePort(t)
		cmd := exec.CommandContext(ctx, exe, "--listen", addr, "--drain-delay", "1s")
		cmd.Env = append(os.Environ(), "NODE_NAME=node-x")
		logFile, err := os.Create(filepath.Join(t.TempDir(), "backend.log"))
		if err != nil {
			t.Fatal(err)
		}
		defer logFile.Close()
		cmd.Stdout, cmd.Stderr = logFile, logFile
		logs := func() string {
			b, _ := os.ReadFile(logFile.Name())
			return string(b)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer cmd.Process.Kill()
		get := func(path string) (int, string, error) {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				return 0, "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b), err
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body, err := get("/health")
			if err == nil {
				if code != http.StatusOK || body != "UP node-x\n" {
					t.Errorf("GET /health = %d %q, want 200 \"UP node-x\\n\"", code, body)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("backend never answered: %v\nlogs:\n%s", err, logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		// Draining: /ready fails within the drain delay.
		for {
			code, _, err := get("/ready")
			if err != nil {
				t.Errorf("GET /ready after SIGTERM: %v, want 503 during the drain delay", err)
				break
			}
			if code == http.StatusServiceUnavailable {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("backend after SIGTERM: %v, want exit 0\nlogs:\n%s", err, logs())
			}
		case <-time.After(10 * time.Second):
			t.Errorf("backend did not exit within 10s of SIGTERM\nlogs:\n%s", logs())
		}
	},
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr())
}
