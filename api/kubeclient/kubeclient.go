// Package kubeclient builds the API client configuration the controller and
// the speaker share.
//
// Its one behaviour beyond client-go's defaults: a read that cannot reach
// the API server at all waits for it (retrying the connection every second
// or faster) instead of failing. client-go's reflectors answer a failed list
// or watch with an exponential backoff that grows to 30 s plus up to 100 %
// jitter, so after an API server restart of half a minute an informer could
// stay blind for another minute: a speaker kept announcing a deleted
// Service's address and never announced a new one. With the wait, an
// informer resumes within about a second of the API server answering again.
package kubeclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/homedir"
	"k8s.io/klog/v2"
)

// Retry delays while the API server cannot be reached: the first retry
// comes after MinRetryDelay, each further one doubles up to MaxRetryDelay,
// and each is spread by ±50 % so that thousands of speakers do not dial in
// lockstep.
const (
	MinRetryDelay = 100 * time.Millisecond
	MaxRetryDelay = time.Second
)

// Config finds the API server the way kubectl does (clientcmd's default
// loading rules): kubeconfig when it is not empty, else the files in
// $KUBECONFIG (a path list, merged), else ~/.kube/config, else the
// in-cluster service account. It sets userAgent, and GET requests wait
// out an unreachable API server; see WaitForAPIServer.
func Config(kubeconfig, userAgent string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if os.Getenv(clientcmd.RecommendedConfigPathEnvVar) == "" {
		// clientcmd reads $HOME once, when the process starts; read it
		// now, which is the same for a binary and lets a test move it.
		rules.Precedence = []string{filepath.Join(homedir.HomeDir(), clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName)}
	}
	// An explicit path must exist; a missing default file only means
	// "look further".
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		if kubeconfig == "" && clientcmd.IsEmptyConfig(err) {
			return nil, fmt.Errorf("no API server configured: pass --kubeconfig, set $KUBECONFIG, write ~/.kube/config, or run in a pod with a service account: %w", err)
		}
		return nil, err
	}
	cfg.UserAgent = userAgent
	cfg.Wrap(WaitForAPIServer)
	return cfg, nil
}

// WaitForAPIServer wraps rt so that a GET or HEAD whose connection could not
// be established (refused, unreachable, dial timeout) is retried until it
// gets through or the request's context ends; the request was never sent,
// so repeating it is safe. Writes and every error after a connection exists
// (HTTP statuses included, so 429 and 5xx keep client-go's own backoff)
// pass through unchanged.
func WaitForAPIServer(rt http.RoundTripper) http.RoundTripper {
	return &waiter{next: rt, sleep: sleepCtx}
}

type waiter struct {
	next  http.RoundTripper
	sleep func(context.Context, time.Duration) bool
}

func (w *waiter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return w.next.RoundTrip(req)
	}
	var (
		first time.Time
		tries int
	)
	delay := MinRetryDelay
	for {
		resp, err := w.next.RoundTrip(req)
		if err == nil || !NotConnected(err) {
			if tries > 0 {
				klog.FromContext(req.Context()).Info("API server reachable again",
					"host", req.URL.Host, "path", req.URL.Path, "waited", time.Since(first).Round(time.Millisecond), "attempts", tries+1)
			}
			return resp, err
		}
		if tries == 0 {
			first = time.Now()
			klog.FromContext(req.Context()).Info("API server unreachable; retrying until it answers",
				"host", req.URL.Host, "path", req.URL.Path, "err", err.Error())
		}
		tries++
		if !w.sleep(req.Context(), jitter(delay)) {
			return nil, err
		}
		delay = min(2*delay, MaxRetryDelay)
	}
}

// NotConnected reports whether err means no connection to the server could
// be made, so the request never left this process.
func NotConnected(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH)
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d)
}

// sleepCtx waits d and reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
