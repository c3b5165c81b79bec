# Conveyor: `make demo` runs the main job (examples/domain-qa), `make test` runs the test suite.
# Both install what they need first; `make install` alone is idempotent.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test test-slow bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned, so that this machine's local CPU build is used by whatever needs it
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[postgres,adapt,train,serve,server,ray,test]'
	touch $(STAMP)

# the web UI's browser tests drive Debian's Chromium (Playwright's own browsers are not downloaded)
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium; }

demo: install
	$(BIN)/conveyor run examples/domain-qa/pipeline.yaml
	@run=$$($(BIN)/conveyor runs --json --limit 1 | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])'); \
	  echo; echo "what the tuned model answered through the gateway (conveyor logs $$run serve-check):"; \
	  $(BIN)/conveyor logs $$run serve-check | grep -E '^(Q|A):'; \
	  echo; echo "headline figures (conveyor logs $$run summary):"; $(BIN)/conveyor logs $$run summary

test: install browser
	$(BIN)/python -m pytest

test-slow: install browser
	$(BIN)/python -m pytest -m slow

bench: install
	$(BIN)/python benchmarks/engine_overhead.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/semscore_throughput.py
	$(BIN)/python benchmarks/gateway_overhead.py
	$(BIN)/python benchmarks/builtin_throughput.py
	$(BIN)/python benchmarks/ray_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache
