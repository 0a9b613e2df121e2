// Command kubectl-ironlb is the kubectl plugin for ironlb: on the PATH,
// kubectl runs it as `kubectl ironlb`. The commands live in controller/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/ironlb/ironlb/controller/cli"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	cancel()
	os.Exit(code)
}
