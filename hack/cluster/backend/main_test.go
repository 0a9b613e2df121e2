package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
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
// /health, fails /ready, and stops after the drain delay with nil.
func TestServeDrains(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	b := &backend{node: "node-b"}
	const drainDelay = time.Second
	ctx, signal := context.WithCancel(context.Background())
	defer signal()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, b, drainDelay) }()

	if code, body := get(t, url+"/ready"); code != http.StatusOK {
		t.Fatalf("/ready before the signal = %d %q, want 200", code, body)
	}
	signal()
	start := time.Now()
	for !b.draining.Load() {
		if time.Since(start) > drainDelay/2 {
			t.Fatal("serve did not start draining after the signal")
		}
		time.Sleep(time.Millisecond)
	}
	if code, body := get(t, url+"/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready while draining = %d %q, want 503", code, body)
	}
	if code, body := get(t, url+"/health"); code != http.StatusOK || body != "UP node-b\n" {
		t.Errorf("/health while draining = %d %q, want 200 \"UP node-b\\n\"", code, body)
	}
	if time.Since(start) >= drainDelay {
		t.Fatalf("the requests took longer than the drain delay (%v); the machine is too slow for this test", drainDelay)
	}

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v, want nil", err)
		}
	case <-time.After(drainDelay + shutdownTimeout):
		t.Fatal("serve did not return after the drain delay")
	}
	if d := time.Since(start); d < drainDelay {
		t.Errorf("serve returned %v after the signal, before the drain delay %v", d, drainDelay)
	}
	if _, err := http.Get(url + "/health"); err == nil {
		t.Error("the server still answers after serve returned")
	}
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
