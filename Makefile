# ironlb: `make test` runs every test tier; .ci/run calls exactly that.
SHELL := /bin/bash
GO ?= go
# Seconds each fuzz target runs in `make test`; the seeds always run as tests.
FUZZTIME ?= 10s
# Services for `make bench-controller`.
N ?= 5000

.PHONY: demo demo-down images e2e bench-failover all build test lint unit fuzz integration bench bench-controller clean

all: build

# The whole system in network namespaces, with a failover; needs root.
demo:
	bash hack/demo.sh

demo-down:
	bash hack/lab.sh down

build:
	$(GO) build -o bin/ ./controller/cmd/controller ./speaker/cmd/speaker

test: lint unit fuzz integration e2e

# gofmt and go vet must be clean.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Tier 1: pure packages and binaries, with the race detector.
unit:
	$(GO) test -race -count=1 ./...

# A short run of every fuzz target on top of its seeds.
fuzz:
	$(GO) test ./ipam -run '^$$' -fuzz '^FuzzParseRange$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config -run '^$$' -fuzz '^FuzzFromFile$$' -fuzztime $(FUZZTIME)
	$(GO) test ./controller -run '^$$' -fuzz '^FuzzParseIPs$$' -fuzztime $(FUZZTIME)
	$(GO) test ./speaker/layer2 -run '^$$' -fuzz '^FuzzDecide$$' -fuzztime $(FUZZTIME)

# Tier 2: against a real etcd + kube-apiserver (built once into .cache/,
# which takes a few minutes on a fresh machine).
integration:
	bash hack/control-plane.sh build
	$(GO) test -tags integration -count=1 -timeout 20m ./...

# Tier 3: the network lab (root, network namespaces): ARP/NDP, failover,
# failback, speaker crash and stop, API server down, no false failover
# under load.
e2e:
	bash hack/control-plane.sh build
	$(GO) test -tags e2e -count=1 -timeout 40m ./hack/e2e/

# OCI image archives bin/images/{controller,speaker}.tar, no Docker needed.
images:
	bash hack/images.sh

# Failover, failback, handoff, steady-state and RSS figures in the lab.
bench-failover:
	bash hack/bench-failover.sh

# Allocator benchmark: ns/alloc and B/alloc at n=1000 and n=60000.
bench:
	$(GO) test ./ipam -run '^$$' -bench 'Allocate|Holders' -benchmem -count 5

# Controller convergence and restart on a fresh control plane (N=5000).
bench-controller:
	bash hack/bench-controller.sh $(N)

clean:
	rm -rf bin
