# Setup and entry points. `make serve` and `make test` are the README's two commands.
# On CPU-only hosts torch is pinned to the 2.13.0 CPU build (a bare `torch` resolves to a multi-GB CUDA
# build); on GPU hosts run `make serve TORCH_SPEC=torch` to get pip's default (CUDA) build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP := $(VENV)/bin/pip

.PHONY: setup serve test lint bench constraints

# Runtime dependencies at the versions in constraints.txt, as the image installs them.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PIP) install --quiet --disable-pip-version-check --constraint constraints.txt -e '.[dev]'
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

# Re-pin constraints.txt: the newest releases of every runtime dependency, resolved in a fresh venv
# (with the CPU torch, whose dependencies are the CUDA build's minus the nvidia-* wheels). Review the
# diff, then run the tests and the container test.
constraints:
	rm -rf /tmp/anysr-constraints-venv
	$(PYTHON) -m venv /tmp/anysr-constraints-venv
	/tmp/anysr-constraints-venv/bin/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" .
	{ sed -n '1,/^[^#]/{/^#/p;}' constraints.txt; /tmp/anysr-constraints-venv/bin/pip freeze --all \
	  --exclude-editable | grep -viE '^(anysr-serve|torch|pip)[=@ ]'; echo; \
	  sed -n '/^# The CUDA build/,$$p' constraints.txt; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf /tmp/anysr-constraints-venv
