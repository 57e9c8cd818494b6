# hostwire — `make demo` and `make test` work on a fresh machine: they create
# .venv and build the sample plug-ins they need, idempotently.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

NPM_STAMP := node_modules/.installed

C_PLUGINS := $(patsubst %/plugin.c,%/build/plugin.wasm,$(wildcard sample_plugins/*/plugin.c))
C_PDK_PLUGINS := $(patsubst %/main.c,%/build/plugin.wasm,$(wildcard sample_plugins/*/main.c))
AS_PLUGINS := $(patsubst %/assembly/index.ts,%/build/plugin.wasm,$(wildcard sample_plugins/*/assembly/index.ts))
RUST_PLUGINS := $(patsubst %/Cargo.toml,%/build/plugin.wasm,$(wildcard sample_plugins/*/Cargo.toml))
# The tasks example (examples/tasks): its own plug-in, on a C PDK generated from its own
# FastAPI document (with the tracked model's webhooks), as a user of hostwire would.
TASKS_PLUGINS := examples/tasks/plugins/task_policy/build/plugin.wasm
# The billing example (examples/billing): a plug-in for an app hostwire does not import,
# through `hostwire gateway`, on a C PDK generated from the app's document.
BILLING_PLUGINS := examples/billing/plugins/invoice_review/build/plugin.wasm
PLUGINS := $(C_PLUGINS) $(C_PDK_PLUGINS) $(AS_PLUGINS) $(RUST_PLUGINS) $(TASKS_PLUGINS) \
  $(BILLING_PLUGINS)

# PDKs generated from openapi/light.yaml, which the sample plug-ins build on.
PDK_INPUTS := openapi/light.yaml $(wildcard platform/hostwire/_pdk/*.py) platform/hostwire/hooks.yaml \
  $(shell find pdk_templates -type f 2>/dev/null)
# Rust comes from Debian (rustup's toolchain has no wasm32 target here).
CARGO := /usr/bin/cargo

.PHONY: all demo test lint bench plugins postgresql chromium clean

all: plugins

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || \
	  { echo "hostwire needs Python 3.11 or newer as '$(PYTHON)' (set PYTHON=...)."; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else \
	    echo "Python cannot create a virtual environment; run: sudo apt-get install python3-venv"; \
	    exit 1; \
	  fi; }

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# C plug-ins: zig's bundled clang from PyPI, no root and no system compiler needed.
sample_plugins/%/build/plugin.wasm: sample_plugins/%/plugin.c $(STAMP)
	@mkdir -p $(dir $@)
	$(PY) -m ziglang cc --target=wasm32-freestanding -O2 -nostdlib -Wl,--no-entry -o $@ $<

# C plug-ins on the C PDK generated from openapi/light.yaml: main.c and the PDK's
# sources in one compile (no libc; the PDK brings its runtime).
sample_plugins/%/build/plugin.wasm: sample_plugins/%/main.c build/pdk/c/.stamp $(STAMP)
	@mkdir -p $(dir $@)
	$(PY) -m ziglang cc --target=wasm32-freestanding -O2 -s -nostdlib -Wl,--no-entry -Wall -Werror \
	  -I build/pdk/c -o $@ $< build/pdk/c/*.c

# Named outside the pattern rule so that make keeps the PDK's stamp (not intermediate).
$(C_PDK_PLUGINS): build/pdk/c/.stamp

# AssemblyScript plug-ins: the compiler and PDK come from npm (package.json).
$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq nodejs npm; \
	  else \
	    echo "Building the AssemblyScript plug-ins needs npm; run: sudo apt-get install nodejs npm"; \
	    exit 1; \
	  fi; }
	npm ci --no-audit --no-fund --silent
	@touch $@

# They build on the AssemblyScript PDK generated from openapi/light.yaml. Without
# --use abort=... (the PDK's abort function) the module imports env.abort, which
# Extism lacks. The incremental runtime frees garbage; stub and minimal run out
# of memory in a long-lived plug-in.
sample_plugins/%/build/plugin.wasm: sample_plugins/%/assembly/index.ts $(NPM_STAMP)
	@mkdir -p $(dir $@)
	node_modules/.bin/asc $< -O3 --runtime incremental \
	  --use abort=build/pdk/assemblyscript/plugin/abortPlugin --outFile $@

# Named here, not in the pattern rule, so that make keeps the stamp (a file only
# reached through pattern rules is intermediate and deleted after the build).
$(AS_PLUGINS): build/pdk/assemblyscript/.stamp

build/pdk/%/.stamp: $(PDK_INPUTS) $(STAMP)
	$(VENV)/bin/hostwire pdk generate --spec openapi/light.yaml --lang $* --out build/pdk/$*
	@touch $@

build/tasks/openapi.json: examples/tasks/tasks/app.py $(shell find platform/hostwire -name '*.py') $(STAMP)
	cd examples/tasks && ../../$(VENV)/bin/hostwire openapi --app tasks.app:create_app \
	  --db sqlite:// --out ../../$@

build/pdk/tasks-c/.stamp: build/tasks/openapi.json $(PDK_INPUTS)
	$(VENV)/bin/hostwire pdk generate --spec $< --lang c --out build/pdk/tasks-c
	@touch $@

examples/tasks/plugins/%/build/plugin.wasm: examples/tasks/plugins/%/main.c build/pdk/tasks-c/.stamp
	@mkdir -p $(dir $@)
	$(PY) -m ziglang cc --target=wasm32-freestanding -O2 -s -nostdlib -Wl,--no-entry -Wall -Werror \
	  -I build/pdk/tasks-c -o $@ $< build/pdk/tasks-c/*.c

build/pdk/billing-c/.stamp: examples/billing/openapi.yaml $(PDK_INPUTS)
	$(VENV)/bin/hostwire pdk generate --spec $< --lang c --out build/pdk/billing-c
	@touch $@

examples/billing/plugins/%/build/plugin.wasm: examples/billing/plugins/%/main.c build/pdk/billing-c/.stamp
	@mkdir -p $(dir $@)
	$(PY) -m ziglang cc --target=wasm32-freestanding -O2 -s -nostdlib -Wl,--no-entry -Wall -Werror \
	  -I build/pdk/billing-c -o $@ $< build/pdk/billing-c/*.c

$(CARGO):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq rustc cargo libstd-rust-dev-wasm32 \
	    librust-serde-json-dev librust-serde-derive-dev; \
	else \
	  echo "Building the Rust plug-ins needs Debian's Rust; run: sudo apt-get install rustc cargo libstd-rust-dev-wasm32 librust-serde-json-dev librust-serde-derive-dev"; \
	  exit 1; \
	fi

# Rust plug-ins: Debian's rustc and crates, offline (.cargo/config.toml), on the
# generated PDK; one shared target folder. The package is named like its folder.
# Named outside the pattern rule too, so make keeps the PDK's stamp (not intermediate).
$(RUST_PLUGINS): build/pdk/rust/.stamp
.SECONDEXPANSION:
sample_plugins/%/build/plugin.wasm: sample_plugins/%/Cargo.toml $$(wildcard sample_plugins/$$*/src/*.rs) \
    build/pdk/rust/.stamp | $(CARGO)
	RUSTC=/usr/bin/rustc $(CARGO) build --release --offline --target wasm32-unknown-unknown \
	  --target-dir build/cargo --manifest-path $<
	@mkdir -p $(dir $@)
	cp build/cargo/wasm32-unknown-unknown/release/$(subst -,_,$*).wasm $@

plugins: $(PLUGINS)

demo: $(STAMP) plugins
	@bash scripts/demo.sh

# The outbox's tests run on PostgreSQL too: tests/postgres.py starts a throw-away
# server from Debian's package (as the unprivileged postgres user under root).
postgresql:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else \
	    echo "The tests need PostgreSQL (they start a throw-away server); run: sudo apt-get install postgresql"; \
	    exit 1; \
	  fi; }

# The console's test drives Debian's headless Chromium through its chromedriver.
chromium:
	@{ command -v chromium && test -x /usr/bin/chromedriver; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "The console's test needs Chromium; run: sudo apt-get install chromium chromium-driver"; \
	    exit 1; \
	  fi; }

# The suite runs on every core (pytest-xdist), a test file per worker at a time,
# so a file's module fixtures (a compiled PDK, a server) are made once.
# PYTEST_ARGS="-n 0 ..." runs it in one process.
PYTEST_ARGS ?= -n auto --dist loadfile
test: $(STAMP) plugins postgresql chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# platform/ is checked with mypy --strict (pyproject.toml); tests and benchmarks with the
# same checks, except that a test, fixture or helper need not be annotated (its body is
# still type-checked: check_untyped_defs).
MYPY_TESTS := --allow-untyped-defs --allow-incomplete-defs --allow-untyped-calls --allow-any-generics

lint: $(STAMP)
	$(VENV)/bin/ruff check platform tests benchmarks examples
	$(VENV)/bin/ruff format --check platform tests benchmarks examples
	$(VENV)/bin/mypy
	MYPYPATH=platform:examples/billing $(VENV)/bin/mypy $(MYPY_TESTS) tests benchmarks examples/tasks/tasks \
	  examples/billing/billing_run.py

bench: $(STAMP) plugins postgresql
	$(PY) benchmarks/bench_runtime.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_hostcalls.py
	$(PY) benchmarks/bench_events.py
	$(PY) benchmarks/bench_hooks.py
	$(PY) benchmarks/bench_delivery.py
	$(PY) benchmarks/bench_tracking.py
	$(PY) benchmarks/bench_documents.py
	$(PY) benchmarks/bench_gateway.py
	$(PY) benchmarks/bench_scaleout.py
	$(PY) benchmarks/bench_workers.py
	$(PY) benchmarks/bench_authoring.py

clean:
	rm -rf sample_plugins/*/build examples/tasks/plugins/*/build examples/billing/plugins/*/build build .pytest_cache .mypy_cache .ruff_cache
