// Package cluster holds the real-cluster end-to-end tests: ironlb installed
// with `kubectl apply` of the shipped manifests on a Kubernetes cluster in
// network namespaces (hack/cluster.sh). They carry the build tag cluster, so
// `go test ./...` and the other tiers do not run them:
//
//	go test -tags cluster -count=1 -timeout 45m ./hack/e2e/cluster/ -v
//
// See main_test.go for what they need (root) and how the cluster is brought
// up and always taken down.
package cluster
