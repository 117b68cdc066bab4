# Tandem: `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
export GOFLAGS ?= -mod=mod
# The Go release everything is built and tested with: go.mod still accepts
# 1.26.8, but 1.27.3 carries the standard library's security fixes
# (scripts/govulncheck.sh lists them). The go command fetches it from the
# module proxy once per machine (about 76 MB). `make GOTOOLCHAIN=local ...`
# uses the installed Go instead.
export GOTOOLCHAIN := go1.27.3
# Tests talk to a real Redis here; ensure-redis.sh starts one when none answers.
TEST_REDIS_ADDR ?= 127.0.0.1:6379
export TANDEM_TEST_REDIS_ADDR := $(TEST_REDIS_ADDR)

.PHONY: help build demo test vet bench deps services clean fuzz vulncheck chaos bench-recsys bench-engine cuda-deps ptx cuda-build cuda-emu cuda-emu-driver gpu-check

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## install what building and testing need (Debian: redis-server, libopenblas-dev, chromium)
	@scripts/install-deps.sh

build: deps ## build producer, worker and scheduler into bin/
	$(GO) build -o $(BIN)/ ./cmd/producer ./cmd/worker ./cmd/scheduler

demo: build ## run the whole pipeline on its embedded defaults, end to end
	$(GO) run ./scripts/demo

services: deps ## start a Redis on $(TEST_REDIS_ADDR) when none answers
	@scripts/ensure-redis.sh $(TEST_REDIS_ADDR)

vet: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test: services vet ## vet, gofmt, and every test with -race against real Redis and an embedded nats-server
	$(GO) test -race -timeout 12m ./...

bench: services ## benchmarks with their peers: pipeline vs raw asynq, batch vs in-process, first-token latency by poll interval, model vs PyTorch/numpy, generation engine vs one job per model
	$(GO) test -run '^$$' -bench Noop -benchtime 5x ./pipeline/
	$(GO) test -run '^$$' -bench BatchVsDirect -benchtime 5x ./batch/
	$(GO) test -run '^$$' -bench InteractiveFirstToken -benchtime 300x ./cmd/producer/
	bench/run.sh

bench-engine: ## generation engine vs one job per model (issue 15): streams, a batch and both at GPT-2 124M shapes, with targets (several minutes)
	bench/run.sh engine

bench-recsys: ## similarity rebuild vs SciPy at 100k users x 20k items x 2M events (about 10 minutes)
	$(GO) run ./bench/recsys

FUZZTIME ?= 30
fuzz: services ## run every fuzz target for FUZZTIME seconds each (default 30; CI: 3), one after another; crashers land in testdata/fuzz
	scripts/fuzz.sh $(FUZZTIME)

chaos: build ## fault-injection run (21 faults): SIGKILL/SIGSTOP workers, kill and restart Redis (AOF) and NATS, stall Redis and NATS 5-15 s, mid-batch; checks exactly-once, writes docs/RELIABILITY.md
	$(GO) run ./scripts/chaos

vulncheck: ## govulncheck offline (database built from golang.org/x/vulndb); fails on reachable module vulnerabilities
	scripts/govulncheck.sh

cuda-deps: ## CUDA 11.8 headers, driver stub, nvcc and gcc-11 from Debian non-free into ~/.cache/tandem/cuda (once; no system change)
	@scripts/cuda-deps.sh

ptx: cuda-deps ## compile gpu/kernels/*.cu to the committed gpu/ptx/ (compute_80, compute_90) and check it with ptxas
	scripts/cuda-ptx.sh

cuda-build: cuda-deps ## vet and build with -tags cuda, check the committed PTX and the driver binding, run the kernels on the CPU emulation
	scripts/cuda-build.sh

cuda-emu: ## every CUDA kernel on the CPU emulation under AddressSanitizer and ThreadSanitizer (a few minutes)
	scripts/cuda-emu.sh --race

cuda-emu-driver: cuda-deps ## package gpu's parity tests on an emulated libcuda: the whole GPU backend on the CPU (about 30 minutes)
	scripts/cuda-emu.sh --driver

gpu-check: cuda-deps ## build build/gpu-check (parity tests, benchmark, data) for a GPU machine; see scripts/gpu-check.sh
	scripts/gpu-check.sh --build

clean: ## remove build outputs and local demo data
	rm -rf $(BIN) .tandem

# Container images (build/docker/*.Dockerfile). One registry and one tag for all four;
# they must match k8s/components/images/kustomization.yaml (go test ./k8s/ checks it).
IMAGE_REPO ?= ghcr.io/tandem-ai
IMAGE_TAG ?= 0.1.0
DOCKER ?= docker
IMAGE_REVISION := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
IMAGE_BUILD = DOCKER_BUILDKIT=1 $(DOCKER) build --build-arg VERSION=$(IMAGE_TAG) --build-arg REVISION=$(IMAGE_REVISION)

.PHONY: images
images: ## build the container images (needs a Docker engine; IMAGE_REPO, IMAGE_TAG)
	@if ! $(DOCKER) info >/dev/null 2>&1; then \
	  echo "make images: no Docker engine answers here ('$(DOCKER) info' failed), so nothing was built."; \
	  echo "  The Dockerfiles are build/docker/*.Dockerfile (go test ./k8s/ lints them); run"; \
	  echo "  'make images' where a Docker engine with BuildKit runs. docs/DEPLOY.md has the rest."; \
	  exit 0; \
	fi; \
	set -e; \
	$(IMAGE_BUILD) -f build/docker/producer.Dockerfile -t $(IMAGE_REPO)/tandem-producer:$(IMAGE_TAG) .; \
	$(IMAGE_BUILD) -f build/docker/scheduler.Dockerfile -t $(IMAGE_REPO)/tandem-scheduler:$(IMAGE_TAG) .; \
	$(IMAGE_BUILD) -f build/docker/worker.Dockerfile -t $(IMAGE_REPO)/tandem-worker:$(IMAGE_TAG) .; \
	$(IMAGE_BUILD) -f build/docker/worker-cuda.Dockerfile -t $(IMAGE_REPO)/tandem-worker-cuda:$(IMAGE_TAG) .
