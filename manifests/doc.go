// Package manifests holds the Kubernetes manifests that install ironlb:
// namespace.yaml, ironlb.yaml (RBAC, the controller Deployment, the speaker
// DaemonSet) and example-config.yaml (the address-pool ConfigMap).
//
// It has no Go code. Its integration tests (build tag integration) apply
// the manifests to a real kube-apiserver, check the Pod Security level of
// both workloads, and run the controller and the speaker under their
// ServiceAccounts' tokens to prove the RBAC rules are enough and no more.
package manifests
