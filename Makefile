# ipsecca build, test and tooling. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
GO ?= go
BIN := bin/ipsecca
# The node agent alone (cmd/ipsecca-sidecar): what the DaemonSet runs on every node.
SIDECAR_BIN := bin/ipsecca-sidecar
TOOLS := .cache/tools
DATA ?= .data
LISTEN ?= 127.0.0.1:8443
PROTO := proto/ipsecca/v1/ipsecca.proto
OVSMON := .cache/ovs-ipsec/usr/share/openvswitch/scripts/ovs-monitor-ipsec

# Debian packages the tests use: protoc for the staleness check, openssl to
# make CSRs like a node would, NSS tools for the node database, libreswan
# (ipsec initnss, pluto), and for the IPsec data-path tests tcpdump, ping,
# kmod and user-mode-linux (this kernel has no ESP), Open vSwitch and its
# Python library (for ovs-monitor-ipsec); Prometheus and promtool for the
# monitoring pack; podman, runc and debootstrap to build and run the image.

.PHONY: fips-test all build run test unit integration deps proto proto-check vet fmt-check clean bench fuzz e2e image

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/ipsecca
	CGO_ENABLED=0 $(GO) build -trimpath -o $(SIDECAR_BIN) ./cmd/ipsecca-sidecar

# The container image, built by podman with no registry (hack/image.sh): the base
# localhost/debian:bookworm-slim by debootstrap once (tarball cached in .cache/image), the
# static binaries (ipsecca, ipsecca-sidecar) built outside the image and copied in, libnss3-tools
# from the apt mirror.
IMAGE ?= localhost/ipsecca:dev
image: deps
	IMAGE=$(IMAGE) GO=$(GO) hack/image.sh

# Run the service on the embedded store, data in ./$(DATA).
run: build
	$(BIN) serve --data-dir $(DATA) --listen $(LISTEN)

# Install what the tests need when missing; fail loudly when we cannot.
deps:
	@missing=""; \
	command -v protoc >/dev/null || missing="$$missing protobuf-compiler"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v certutil >/dev/null && command -v pk12util >/dev/null || missing="$$missing libnss3-tools"; \
	command -v ipsec >/dev/null || missing="$$missing libreswan"; \
	command -v tcpdump >/dev/null || missing="$$missing tcpdump"; \
	command -v ping >/dev/null || missing="$$missing iputils-ping"; \
	command -v modprobe >/dev/null || missing="$$missing kmod"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v linux.uml >/dev/null || missing="$$missing user-mode-linux"; \
	command -v ovs-vswitchd >/dev/null || missing="$$missing openvswitch-switch"; \
	/usr/bin/python3 -c 'import ovs' 2>/dev/null || missing="$$missing python3-openvswitch"; \
	command -v promtool >/dev/null && command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "FATAL: need root to apt-get install$$missing" >&2; exit 1; fi; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	    || { echo "FATAL: apt-get install$$missing failed" >&2; exit 1; }; \
	fi
	@# ovs-monitor-ipsec alone: Debian's openvswitch-ipsec package depends on
	@# strongswan, whose install removes libreswan, so the script is taken
	@# out of the .deb.
	@test -x $(OVSMON) || { rm -rf .cache/ovs-ipsec && mkdir -p .cache/ovs-ipsec && \
	  (cd .cache/ovs-ipsec && apt-get download openvswitch-ipsec >/dev/null && dpkg -x openvswitch-ipsec_*.deb .) && \
	  test -x $(OVSMON) || { echo "FATAL: could not extract ovs-monitor-ipsec from openvswitch-ipsec" >&2; exit 1; }; }

$(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc: go.mod
	@mkdir -p $(TOOLS)
	$(GO) build -o $(TOOLS)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o $(TOOLS)/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc

# Regenerate the committed gRPC code.
proto: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	protoc --plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc \
	  --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative $(PROTO)

# Fail when the committed generated code is stale.
proto-check: deps $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	protoc --plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc \
	  --go_out=$$tmp --go_opt=paths=source_relative \
	  --go-grpc_out=$$tmp --go-grpc_opt=paths=source_relative $(PROTO); \
	for f in $$(cd $$tmp && find . -name '*.go'); do \
	  cmp -s $$tmp/$$f $$f || { echo "FATAL: $$f is stale: run 'make proto' and commit" >&2; exit 1; }; \
	done; echo "proto: generated code is current"

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "FATAL: gofmt needed:" >&2; echo "$$out" >&2; exit 1; fi

vet:
	$(GO) vet ./...

unit: deps
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

integration: deps build
	$(GO) test -count=1 -timeout 50m ./integration/...

# The IPsec data-path proofs alone (raw libreswan, and the OVS mesh with
# ovs-monitor-ipsec; in a UML guest when this
# kernel has no ESP). IPSECCA_E2E_OUT=DIR keeps its logs and captures.
e2e: deps build
	$(GO) test -count=1 -timeout 50m -v -run 'TestLibreswanESP|TestOVSMesh' ./integration/

# Everything CI checks. The quick benchmark runs too, so a bench that no longer runs is caught;
# its verdicts (PASS/MISS on a shared CI host) do not fail the build.
test: deps fmt-check vet proto-check
	$(GO) test -count=1 -timeout 50m ./...
	$(MAKE) --no-print-directory fips-test
	$(MAKE) --no-print-directory bench BENCH_ARGS=--quick

# The FIPS 140-3 lane: the packages that sign, seal and fill NSS built with the validated Go Cryptographic Module
# (GOFIPS140=v1.0.0) and run with every unapproved algorithm refused; integration's TestFIPS140* run the binary so.
# Not yet in it: store/etcd, daemon, server's bundle tests (their fixtures make legacy PKCS#12), bundle (issue #24).
FIPS_PKGS = ./ca/... ./nssdb/... ./rotation/... ./store/bolt/... ./sidecar/... ./internal/buildinfo/...
fips-test: deps
	GOFIPS140=v1.0.0 GODEBUG=fips140=only $(GO) test -count=1 $(FIPS_PKGS)

# Throughput, footprint and scale benchmark of the real binaries (see BENCHMARKS.md): every goal of
# issue #23 as a ratio measured in this one run, with PASS/MISS. BENCH_ARGS=--quick for a CI-sized
# run, --phases core,kube,sidecar,storm to pick parts.
bench: build
	$(GO) run ./cmd/bench --binary $(BIN) $(BENCH_ARGS)

# Run every fuzz target for FUZZTIME each (their seed corpora run in every `make test`).
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME); \
	  done; \
	done

clean:
	rm -rf bin $(TOOLS)
