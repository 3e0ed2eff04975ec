# hashrig — two commands on a fresh Debian/Ubuntu machine:
#   make run    mine on the embedded demo node (serves /metrics on 127.0.0.1:9787)
#   make test   the whole test suite
# Both install the system packages they need first (apt), when missing.

SHELL := /bin/bash
CARGO ?= cargo
# libhwloc-dev: topology and pinning (feature numa); promtool (package
# prometheus) checks the /metrics exposition and tools/monitoring/'s alert
# rules (check and unit tests) and dashboard queries in the tests; python3 is the
# second SHA-256 implementation the scan tests compare against;
# mesa-vulkan-drivers is lavapipe, the CPU Vulkan driver the GPU tests run on;
# haproxy is the load balancer tests/sigserve_balanced.rs puts in front of
# two verification servers (with tools/haproxy/hashrig-sigserve.cfg);
# capnproto and libcapnp-dev build SRI's pool (sri-pool, for tests/sri_pool.rs).
APT_PACKAGES := build-essential pkg-config libhwloc-dev libudev-dev prometheus python3 mesa-vulkan-drivers haproxy \
	capnproto libcapnp-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RUN_ARGS ?=
# Mesa's Vulkan drivers (lavapipe, probed by the GPU engine and its tests)
# print "XDG_RUNTIME_DIR is invalid" on headless machines without one.
ifeq ($(XDG_RUNTIME_DIR),)
export XDG_RUNTIME_DIR := /tmp/hashrig-runtime-$(shell id -u)
endif

.PHONY: all deps build run test bench check fuzz clean sri-pool

all: build

deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)"; exit 1; }

build: deps
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)
	$(CARGO) build --release

run: build
	./target/release/hashrig run $(RUN_ARGS)

# The Stratum V2 Reference Implementation's pool role, from the crates
# registry, run by tests/sri_pool.rs as its own binary. Built once (its own
# dependency tree, --locked to the versions it was released with).
SRI_POOL_VERSION := 0.7.0
SRI_POOL := target/sri-pool/bin/pool_sv2
sri-pool: deps
	@[ -x $(SRI_POOL) ] && $(SRI_POOL) --version 2>/dev/null | grep -q '$(SRI_POOL_VERSION)' || \
		$(CARGO) install pool_sv2 --version $(SRI_POOL_VERSION) --locked --root target/sri-pool

# One build profile for everything the tests need (the test profile is
# optimised, see Cargo.toml); benches are compiled and run once as tests.
test: deps sri-pool
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)
	$(CARGO) test --all-targets --locked
	$(CARGO) test --doc --locked

bench: deps
	$(CARGO) bench --bench sha256d
	$(CARGO) bench --bench sig
	$(CARGO) run --release -- bench pow
	$(CARGO) run --release -- bench sig --max-batch 4096

check: deps
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) check --no-default-features --all-targets

# Fuzzing (not in CI): each cargo-fuzz target in fuzz/ for FUZZ_SECS seconds,
# on nightly; crashes land in fuzz/artifacts/TARGET/.
FUZZ_SECS ?= 60
FUZZ_TARGETS := sigserve_frame stratum_message config_file hw_profile gbt_template
fuzz: deps
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz: $$t for $(FUZZ_SECS) s"; \
		$(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	done

clean:
	$(CARGO) clean
