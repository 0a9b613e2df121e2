# ironlb: `make test` runs every test tier; .ci/run calls exactly that.
SHELL := /bin/bash
GO ?= go
# How long each fuzz target runs in `make test`, as a count of inputs (each
# target takes 2-15 s here); the seeds always run as tests. A count, not a
# duration: Go 1.26's fuzz coordinator can fail a run whose -fuzztime
# duration expires while a worker is busy ("context deadline exceeded",
# no crasher; go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME ?= 20000x
# Services for `make bench-controller`.
N ?= 5000

.PHONY: demo demo-down images e2e cluster-e2e bench-failover bench-speaker bench-scale bench-cluster all build test lint unit fuzz integration bench bench-controller clean

all: build

# The user's journey on a real cluster in network namespaces (kubelet,
# containerd, kube-proxy), with a node failover; needs root.
demo:
	bash hack/demo.sh

demo-down:
	bash hack/cluster.sh down

build:
	$(GO) build -o bin/ ./controller/cmd/controller ./speaker/cmd/speaker ./controller/cmd/kubectl-ironlb

test: lint unit fuzz integration e2e cluster-e2e

# gofmt and go vet must be clean.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@# The speaker binary must not pull in the controller (workqueue, its metrics).
	@if $(GO) list -deps ./speaker/cmd/speaker | grep -q 'ironlb/ironlb/controller'; then echo "speaker/cmd/speaker imports the controller package"; exit 1; fi

# Tier 1: pure tests, with the race detector: no root, no network
# namespace, no API server, no image build, no real memberlist, no
# waiting on the wall clock (tests that wait for timers run in
# testing/synctest bubbles, on a fake clock). Tests that need any of those
# carry their tier's build tag and do not run here. Nearly all of its cost
# is linking 19 race-instrumented test binaries (no test takes 0.5 s):
# about 40 CPU-seconds with a warm build cache, 28-36 s of wall time on
# this 2-core host while other builds shared it (load 3-7).
#
# GORACE=atexit_sleep_ms=0: a race-instrumented binary otherwise sleeps
# 1 s when it exits, in case a goroutine still running races meanwhile;
# with 19 test binaries that second each was about a quarter of the
# tier's wall time. Races during the tests are reported as before, when
# they happen.
unit:
	GORACE="atexit_sleep_ms=0 $(GORACE)" $(GO) test -race -count=1 ./...

# A short run of every fuzz target on top of its seeds.
fuzz:
	$(GO) test ./ipam -run '^$$' -fuzz '^FuzzParseRange$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config -run '^$$' -fuzz '^FuzzFromFile$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config/metallb -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./controller -run '^$$' -fuzz '^FuzzParseIPs$$' -fuzztime $(FUZZTIME)
	$(GO) test ./speaker/layer2 -run '^$$' -fuzz '^FuzzDecide$$' -fuzztime $(FUZZTIME)
	$(GO) test ./speaker/layer2 -run '^$$' -fuzz '^FuzzDecodeAnswer$$' -fuzztime $(FUZZTIME)
	$(GO) test ./speaker/membership -run '^$$' -fuzz '^FuzzDecodeMeta$$' -fuzztime $(FUZZTIME)
	$(GO) test ./api -run '^$$' -fuzz '^FuzzParseAnnouncements$$' -fuzztime $(FUZZTIME)
	$(GO) test ./speaker -run '^$$' -fuzz '^FuzzDecodeReannounce$$' -fuzztime $(FUZZTIME)

# Tier 2: real things, slower, no root: a real etcd + kube-apiserver
# (built once into .cache/, which takes a few minutes on a fresh
# machine), real memberlist members on loopback (failure detection, leave,
# partition, 15 s of CPU load without a false death), real sockets, and
# the long runs of the randomized property tests. Only the tests tagged
# integration, not the unit tier again.
integration:
	bash hack/control-plane.sh build
	bash hack/tier.sh integration -timeout 20m

# Tier 3: the network lab (root, network namespaces): the responders on
# veths (speaker/layer2, speaker/linkwatch, tagged e2e), ARP/NDP, failover,
# failback, speaker crash and stop, API server down, no false failover
# under load.
e2e:
	bash hack/control-plane.sh build
	bash hack/tier.sh e2e -timeout 40m

# Tier 4: a real cluster (hack/cluster.sh: control plane, three nodes with
# containerd, kubelet and kube-proxy) with ironlb installed from manifests/.
cluster-e2e:
	bash hack/cluster.sh build
	$(GO) test -tags cluster -count=1 -timeout 45m ./hack/e2e/cluster/

# Image archives bin/images/{controller,speaker,pause,backend}.tar in
# `docker save` format, which ctr import, kind load and docker load all
# take; no Docker needed. Also the kubectl plugin's release archive
# bin/release/kubectl-ironlb-linux-ARCH.tar.gz.
images:
	bash hack/images.sh

# Failover, failback, handoff, steady-state and RSS figures in the lab.
bench-failover:
	bash hack/bench-failover.sh

# Idle CPU and RSS of three lab speakers with 1 and with 1,000 addresses.
bench-speaker:
	bash hack/bench-speaker.sh

# Scale envelope: detection, false deaths, gossip bytes and election cost
# of 3, 50, 100 and 250 simulated speakers (one process, memberlist's
# in-memory network, ~20 min); SCALE_NODES, SCALE_KILLS, SCALE_STEADY etc.
# shorten it (hack/bench-scale.sh lists them). Not part of `make test`.
bench-scale:
	bash hack/bench-scale.sh

# Failover, rollouts, drain and idle cost on the real cluster (hack/cluster.sh).
bench-cluster:
	bash hack/bench-cluster.sh

# Allocator benchmark: ns/alloc and B/alloc at n=1000 and n=60000.
bench:
	$(GO) test ./ipam -run '^$$' -bench 'Allocate|Holders' -benchmem -count 5

# Convergence and restart of the controller binary with the manifest's args, on a fresh control plane (N=5000).
bench-controller:
	bash hack/bench-controller.sh $(N)

clean:
	rm -rf bin
