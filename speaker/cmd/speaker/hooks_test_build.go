//go:build testhooks

package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/speaker/layer2"
)

// testHooks, in a test build (-tags testhooks) only: SIGUSR1 deafens the
// responder of the first interface this node answers on (it keeps running
// and looks healthy, but answers nothing), the failure the lab's
// TestSelfCheck makes the other speakers find.
func testHooks(ctx context.Context, ann *layer2.Announcer, logger klog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				ifis := ann.Interfaces()
				if len(ifis) == 0 {
					logger.Info("Test hook: no responder to deafen")
					continue
				}
				ann.Deafen(ifis[0].Name)
				logger.Info("Test hook: responder deafened", "interface", ifis[0].Name)
			}
		}
	}()
}
