// Command pause is the pod sandbox image's process for nodes without a
// registry: containerd starts it first in every pod to hold the pod's
// namespaces, and it does nothing until the pod is stopped.
//
// It exits 0 on SIGINT or SIGTERM, as the upstream pause does, so that
// stopping a sandbox is not logged as a failure. When the pod shares one PID
// namespace (shareProcessNamespace: true), it is PID 1 there and inherits
// every orphaned process, so it reaps them on SIGCHLD; otherwise they would
// stay zombies until the pod ends.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Separate channels: os/signal drops a signal when its channel is
	// full, and a burst of SIGCHLD must not crowd out SIGTERM. A dropped
	// SIGCHLD is harmless, since reap collects every exited child at once.
	term := make(chan os.Signal, 1)
	chld := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGINT, syscall.SIGTERM)
	signal.Notify(chld, syscall.SIGCHLD)
	// As the upstream pause warns; printed once the signals are caught, so
	// whoever started it may signal it from then on.
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1, so orphaned processes are not reparented to it")
	}
	for {
		select {
		case <-chld:
			reap()
		case sig := <-term:
			fmt.Fprintf(os.Stderr, "pause: %v, exiting\n", sig)
			os.Exit(0)
		}
	}
}

// reap waits for every child that has exited, without blocking, and
// returns how many it collected.
func reap() int {
	n := 0
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			// 0: children remain but none has exited; ECHILD: none remain.
			return n
		}
		n++
	}
}
