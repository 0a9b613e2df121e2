// Command backend is the HTTP server behind the test and demo Services: it
// says which node answered, so that a client of a LoadBalancer IP can see
// where its traffic went.
//
//	backend [--listen :8080] [--node-name NODE] [--drain-delay 5s] [-v N]
//
// GET /health answers "UP NODE\n". GET /ready answers 200 until SIGTERM and
// 503 after it, so that a readinessProbe on /ready takes the Pod out of the
// Service's ready endpoints while it drains.
//
// On SIGTERM (or SIGINT) it goes on serving for --drain-delay before it
// stops: the kubelet sends SIGTERM at the same time as the endpoint
// controller starts removing the Pod, so kube-proxy on every node may still
// send new connections to it for a moment, and kube-proxy keeps using
// terminating endpoints when a Service has no other. Then it shuts down
// gracefully (in-flight requests finish) and exits 0. A second signal ends
// it at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// shutdownTimeout bounds how long in-flight requests may take after the
// drain delay; with the default 5s delay the whole stop stays well inside
// the default 30s termination grace period.
const shutdownTimeout = 10 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":8080", "address to serve HTTP on")
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "node name /health reports (default: $NODE_NAME, set from the downward API)")
	drainDelay := fs.Duration("drain-delay", 5*time.Second, "how long to keep serving after SIGTERM, with /ready failing, before shutting down")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	verbosity := fs.String("v", "0", "log verbosity (4 logs every request)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := klogFlags.Set("v", *verbosity); err != nil {
		fmt.Fprintln(stderr, "backend: -v:", err)
		return 2
	}
	// An empty name would make every answer look alike and hide which node
	// served a request, which is what the tests look at.
	if *nodeName == "" {
		fmt.Fprintln(stderr, "backend: --node-name is required (or set NODE_NAME from the downward API: fieldRef spec.nodeName)")
		return 2
	}
	defer klog.Flush()
	logger := klog.Background().WithName("backend").WithValues("node", *nodeName)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Error(err, "Cannot listen", "addr", *listen)
		return 1
	}
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// Restore the default action once draining started, so that a
		// second signal stops the process at once.
		<-sigCtx.Done()
		stop()
	}()
	ctx := klog.NewContext(sigCtx, logger)
	if err := serve(ctx, ln, &backend{node: *nodeName}, *drainDelay); err != nil {
		logger.Error(err, "Serving failed")
		return 1
	}
	return 0
}

// backend answers /health and /ready. Its handlers and drain may be called
// from any goroutine.
type backend struct {
	node     string
	draining atomic.Bool
}

func (b *backend) handler(logger klog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		logger.V(4).Info("Request", "path", r.URL.Path, "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "UP %s\n", b.node)
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if b.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "draining\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}

// serve serves b on ln until ctx ends, then drains: /ready fails and
// keep-alive connections are closed after their next response, so that
// clients reconnect to other endpoints, while /health keeps answering for
// drainDelay. Then it shuts the server down, waiting up to shutdownTimeout
// for requests in flight, and returns nil. It returns early with the error
// if the server fails.
func serve(ctx context.Context, ln net.Listener, b *backend, drainDelay time.Duration) error {
	logger := klog.FromContext(ctx)
	srv := &http.Server{
		Handler:           b.handler(logger),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("Serving", "addr", ln.Addr().String(), "drainDelay", drainDelay)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	b.draining.Store(true)
	srv.SetKeepAlivesEnabled(false)
	logger.Info("Termination signal: /ready fails, still serving until the drain delay ends", "drainDelay", drainDelay)
	timer := time.NewTimer(drainDelay)
	defer timer.Stop()
	select {
	case err := <-errc:
		return err
	case <-timer.C:
	}

	logger.Info("Shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	logger.Info("Stopped")
	return nil
}
