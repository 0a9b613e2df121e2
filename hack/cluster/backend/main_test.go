package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"k8s.io/klog/v2"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	return getWith(t, http.DefaultClient, url)
}

func getWith(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestHandler(t *testing.T) {
	b := &backend{node: "node-a"}
	srv := httptest.NewServer(b.handler(klog.Background()))
	defer srv.Close()

	for _, tc := range []struct {
		name     string
		draining bool
		path     string
		code     int
		body     string
	}{
		{"health names the node", false, "/health", http.StatusOK, "UP node-a\n"},
		{"ready while serving", false, "/ready", http.StatusOK, "ready\n"},
		{"health still answers while draining", true, "/health", http.StatusOK, "UP node-a\n"},
		{"ready fails while draining", true, "/ready", http.StatusServiceUnavailable, "draining\n"},
		{"unknown path", false, "/nope", http.StatusNotFound, "404 page not found\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.draining.Store(tc.draining)
			code, body := get(t, srv.URL+tc.path)
			if code != tc.code || body != tc.body {
				t.Errorf("GET %s = %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
			}
		})
	}
}

// TestServeDrains: after the signal (ctx ends) the server keeps answering
// /health, fails /ready, and stops after the drain delay with nil. It runs
// in a synctest bubble on in-memory connections, so the drain delay passes
// on the bubble's clock: the checks of when serve returns are exact, and
// the test spends no wall time waiting.
func TestServeDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := newPipeListener()
		c := ln.client()
		b := &backend{node: "node-b"}
		const drainDelay = time.Second
		ctx, signal := context.WithCancel(context.Background())
		defer signal()
		done := make(chan error, 1)
		go func() { done <- serve(ctx, ln, b, drainDelay) }()

		if code, body := getWith(t, c, "http://backend/ready"); code != http.StatusOK {
			t.Fatalf("/ready before the signal = %d %q, want 200", code, body)
		}
		signal()
		// Every goroutine is blocked once serve has reacted to the signal.
		synctest.Wait()
		start := time.Now()
		if !b.draining.Load() {
			t.Fatal("serve did not start draining after the signal")
		}
		if code, body := getWith(t, c, "http://backend/ready"); code != http.StatusServiceUnavailable {
			t.Errorf("/ready while draining = %d %q, want 503", code, body)
		}
		if code, body := getWith(t, c, "http://backend/health"); code != http.StatusOK || body != "UP node-b\n" {
			t.Errorf("/health while draining = %d %q, want 200 \"UP node-b\\n\"", code, body)
		}

		// Just before the drain delay ends, serve still runs and answers.
		time.Sleep(drainDelay - time.Since(start) - time.Millisecond)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("serve returned %v before the drain delay %v had passed", err, drainDelay)
		default:
		}
		if code, _ := getWith(t, c, "http://backend/health"); code != http.StatusOK {
			t.Errorf("/health at the end of the drain delay = %d, want 200", code)
		}

		if err := <-done; err != nil {
			t.Fatalf("serve returned %v, want nil", err)
		}
		// Shutdown itself may poll for connections to finish, so serve
		// may return a little after the delay, never before it.
		if d := time.Since(start); d < drainDelay || d > drainDelay+shutdownTimeout {
			t.Errorf("serve returned %v after the signal, want the drain delay %v and at most the shutdown timeout more", d, drainDelay)
		}
		if resp, err := c.Get("http://backend/health"); err == nil {
			resp.Body.Close()
			t.Error("the server still answers after serve returned")
		}
	})
}

// pipeListener is a net.Listener whose connections are in-memory pipes,
// which, unlike sockets, let serve run inside a synctest bubble.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// client returns an HTTP client whose every request dials l afresh, so no
// idle connection outlives the test's bubble.
func (l *pipeListener) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			server, client := net.Pipe()
			select {
			case l.conns <- server:
				return client, nil
			case <-l.closed:
			case <-ctx.Done():
			}
			server.Close()
			client.Close()
			return nil, net.ErrClosed
		},
	}}
}

func TestRunNeedsNodeName(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	var stderr bytes.Buffer
	if code := run([]string{"--listen", "127.0.0.1:0"}, &stderr); code != 2 {
		t.Errorf("run without a node name = %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "--node-name is required") {
		t.Errorf("stderr %q does not say the node name is required", stderr.String())
	}
}
