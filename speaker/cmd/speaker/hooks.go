//go:build !testhooks

package main

import (
	"context"

	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/speaker/layer2"
)

// testHooks installs nothing in a release build; see hooks_test_build.go.
func testHooks(context.Context, *layer2.Announcer, klog.Logger) {}
