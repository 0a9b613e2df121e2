//go:build integration

package kubeclient

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestWaiterWaitsForAServerToListen uses a real loopback socket and the
// wall clock (the integration tier, not the unit one): a GET to a
// port nobody listens on is answered once a server starts there.
func TestWaiterWaitsForAServerToListen(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	client := &http.Client{Transport: WaitForAPIServer(&http.Transport{})}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		resp, err := client.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{string(b), err}
	}()

	time.Sleep(500 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("request finished while nothing listened: %+v", r)
	default:
	}
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s again: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(l)
	defer srv.Close()
	r := <-done
	if r.err != nil || r.body != "ok" {
		t.Fatalf("got %q, %v; want ok", r.body, r.err)
	}
}
