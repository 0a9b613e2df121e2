// Package e2e holds the network-lab end-to-end tests. They carry the build
// tag e2e, so `go test ./...` and `-tags integration` do not run them:
//
//	go test -tags e2e ./hack/e2e/ -v -count=1 -timeout 30m
//
// See lab_test.go for what they need (root) and how the lab is brought up
// and always taken down.
package e2e
