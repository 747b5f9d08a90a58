# The one entry point for building, running and testing the relay.
# `make run` serves the demo; `make test` is what CI runs.

CARGO   ?= cargo
WASM    := wasm32-wasip2
PLUGINS := openai anthropic gemini azure
# Adapters for the tests only (target/fixtures); never copied into plugins.d.
FIXTURES := misbehave future-contract contract-v0-1
RELAY   := target/release/relay
DEMO    := target/release/demo-upstream

.PHONY: all build host plugins fixtures run test alerts promtool soak fuzz bench lint fmt clean toolchain

all: build

toolchain:
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM) || rustup target add $(WASM)

## build: the relay at target/release/relay and every adapter at plugins.d/<name>.wasm
build: host plugins

host:
	$(CARGO) build --release --locked -p relay -p demo-upstream

plugins: toolchain
	$(CARGO) build --locked --profile plugin --target $(WASM) $(foreach p,$(PLUGINS),-p $(p)-adapter)
	@mkdir -p plugins.d
	@for p in $(PLUGINS); do cp target/$(WASM)/plugin/$${p}_adapter.wasm plugins.d/$$p.wasm; echo "plugins.d/$$p.wasm"; done

fixtures: toolchain
	$(CARGO) build --locked --profile plugin --target $(WASM) $(foreach p,$(FIXTURES),-p $(p)-adapter)
	@mkdir -p target/fixtures
	@for p in $(FIXTURES); do cp target/$(WASM)/plugin/$$(echo $$p | tr - _)_adapter.wasm target/fixtures/$$p.wasm; done
	@# The hot-reload fixture, built five times: two versions to swap, one whose info() traps,
	@# one whose info() sleeps, one that asks for the key in a header upstreams reflect, one
	@# that asks for it in the query string.
	@for tag in a b trap sleep reflect query; do \
	  FIXTURE_TAG=$$tag $(CARGO) build --locked --profile plugin --target $(WASM) -p tagged-adapter && \
	  cp target/$(WASM)/plugin/tagged_adapter.wasm target/fixtures/tagged-$$tag.wasm || exit 1; \
	done
	@# The plugin template, built the way its README tells authors to (its own workspace).
	$(CARGO) build --locked --release --target $(WASM) --manifest-path examples/plugin-template/Cargo.toml --target-dir target/template
	cp target/template/$(WASM)/release/plugin_template.wasm target/fixtures/plugin-template.wasm
	@ls target/fixtures

## run: the demo upstream on 127.0.0.1:8081 and the relay on 127.0.0.1:3000
run: build
	@echo
	@echo "Try it (token sk-relay-demo, model demo-gpt):"
	@echo "  curl -s http://127.0.0.1:3000/v1/chat/completions -H 'Authorization: Bearer sk-relay-demo' -H 'Content-Type: application/json' -d '{\"model\":\"demo-gpt\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'"
	@echo "  curl -sN http://127.0.0.1:3000/v1/chat/completions -H 'Authorization: Bearer sk-relay-demo' -H 'Content-Type: application/json' -d '{\"model\":\"demo-gpt\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'"
	@echo
	@$(DEMO) --listen 127.0.0.1:8081 & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	$(RELAY) serve --config examples/relay.toml

## test: unit tests, adapter tests and end-to-end tests against the real binary
test: build fixtures alerts
	$(CARGO) test --release --locked --workspace
	$(CARGO) test --release --locked --manifest-path examples/plugin-template/Cargo.toml --target-dir target/template

## promtool: Prometheus' rule tester (Debian's prometheus package), installed where missing
promtool:
	@command -v promtool >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }

## alerts: the alert rules in deploy/ checked and unit-tested with Prometheus' rule tester
alerts: promtool
	promtool check rules deploy/alerts.yaml
	promtool test rules deploy/alerts.test.yaml

## soak: 20,000 mixed requests (30% client aborts, stalls, header timeouts, vendor drops)
soak: build
	SOAK_REQUESTS=20000 SOAK_WARMUP=6000 SOAK_CONCURRENCY=250 SOAK_STRICT=1 \
	  $(CARGO) test --release --locked -p relay-tests --test soak -- --nocapture

## fuzz: the adapters' and the kit's property tests (run with 256 cases by `make test`) at
## FUZZ_CASES cases each; a failure is shrunk for at most a minute, and its seed saved in
## tests/properties.proptest-regressions (commit it: every later run replays it first).
FUZZ_CASES ?= 20000
FUZZ_CRATES := relay-plugin-kit $(foreach p,$(PLUGINS),$(p)-adapter)
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) PROPTEST_MAX_SHRINK_TIME=60000 \
	  $(CARGO) test --release --locked --no-fail-fast $(foreach c,$(FUZZ_CRATES),-p $(c)) --test properties

## bench: the relay against the bundled mock, side by side with direct and nginx (docs/benchmarks.md)
bench: build
	bash bench/run.sh

lint: toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path examples/plugin-template/Cargo.toml -- --check
	@# The host-target crates, their tests and the e2e suites (release: the artifacts of build and test).
	$(CARGO) clippy --release --locked --all-targets -p relay -p demo-upstream -p relay-tests -p relay-plugin-kit -- -D warnings
	$(CARGO) clippy --locked --target $(WASM) $(foreach p,$(PLUGINS) $(FIXTURES) tagged,-p $(p)-adapter) -- -D warnings
	$(CARGO) clippy --locked --target $(WASM) --manifest-path examples/plugin-template/Cargo.toml --target-dir target/template -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -f plugins.d/*.wasm
