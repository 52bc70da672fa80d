# Setup and entry points. `make serve` and `make test` are the README's two commands.
# On CPU-only hosts torch is pinned to the 2.13.0 CPU build (a bare `torch` resolves to a multi-GB CUDA
# build); on GPU hosts run `make serve TORCH_SPEC=torch` to get pip's default (CUDA) build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP := $(VENV)/bin/pip

.PHONY: setup serve test lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

serve: setup
	$(VENV)/bin/anysr serve

test: setup
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(VENV)/bin/python -m benchmarks.suite
